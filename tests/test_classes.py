import pytest

from classroom_fer.classes import CLASS_NAMES, canonical_name, class_index


def test_fer2013_order():
    # FER2013's CSV label order: 0 Angry ... 6 Neutral.
    assert CLASS_NAMES == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.mark.parametrize("alias,expected", [("Anger", "angry"), ("HAPPINESS", "happy"), (" sadness ", "sad"),
                                            ("Surprised", "surprise"), ("neutral", "neutral")])
def test_aliases(alias, expected):
    assert canonical_name(alias) == expected
    assert CLASS_NAMES[class_index(alias)] == expected


def test_unknown_class_is_rejected():
    with pytest.raises(ValueError, match="unknown expression class"):
        class_index("bored")
