"""Text features of interaction events (chat, Q&A, transcripts): behaviour only, pure rules, no I/O."""

from shared.text.questions import TextFeatures, is_question, text_features, words

__all__ = ["TextFeatures", "is_question", "text_features", "words"]
