"""`classroom-fer serve`: the teacher dashboard on http://127.0.0.1:8000 (local only by default)."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import socket

from ..errors import UserError

log = logging.getLogger("classroom_fer.serve")
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]"]  # Host header forms (IPv6 keeps its brackets)


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the teacher dashboard: a local web app for photos, videos and a live webcam")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="largest upload accepted, in MB (413 beyond it)")
    p.add_argument("--max-image-megapixels", type=float, default=40.0, help="largest photo or video frame accepted")
    p.add_argument("--video-fps", type=float, default=2.0, help="video frames analysed per second (0: every frame)")
    p.add_argument("--window", type=float, default=10.0, help="seconds per bin of the mood timeline")
    p.add_argument("--live-idle", type=float, default=120.0, help="seconds after which an idle live session is forgotten")
    p.add_argument("--model", help="checkpoint folder or .onnx file (default: the shipped model)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    p.add_argument("--detector", choices=["centerface", "haar"], default="centerface")
    p.add_argument("--threads", type=int, help="inference threads (default: the libraries' choice)")
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise UserError("the dashboard needs its extra: pip install 'classroom-fer[serve]'") from None
    from ..pipeline import Analyzer
    from .app import ServeSettings, create_app

    for name in ("max_upload_mb", "max_image_megapixels", "window", "live_idle"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')}: must be positive")
    if args.video_fps < 0:
        raise UserError("--video-fps: must be 0 (every frame) or positive")
    settings = ServeSettings(max_upload_mb=args.max_upload_mb, max_image_megapixels=args.max_image_megapixels,
                             video_fps=args.video_fps or None, window_s=args.window, live_idle_s=args.live_idle)
    listener = _listen(args.host, args.port)
    loopback = _is_loopback(args.host)
    if not loopback:
        log.warning("listening on %s: the dashboard has no login, so anyone who can reach this address can use it", args.host)
    analyzer = Analyzer(model=args.model, backend=args.backend, detector=args.detector, threads=args.threads)
    app = create_app(analyzer, settings, allowed_hosts=LOOPBACK_NAMES if loopback else None)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"classroom-fer dashboard on http://{host}:{listener.getsockname()[1]}/  (Ctrl+C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    server.run(sockets=[listener])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, so a busy port or a bad address is one clear error line (not a uvicorn traceback)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: must be between 0 and 65535")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, reuse_port=False)
    except (OSError, OverflowError) as error:
        raise UserError(f"{host}:{port}: cannot listen there ({getattr(error, 'strerror', None) or error})") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
