"""A deterministic synthetic topic-classification dataset, so the quickstart needs no data files.

Each class owns a vocabulary of topic words; a sentence mixes its class's words with filler and, with
probability ``ambiguity``, words of other classes. Some examples are therefore genuinely ambiguous, which
gives a model something to memorise: the train/validation gap is real, not zero.
"""

from __future__ import annotations

import numpy as np

TOPICS: dict[str, list[str]] = {
    "sports": "match team goal coach season league player score tournament championship stadium referee"
    " victory defeat striker pitcher racket medal sprint olympic".split(),
    "business": "market shares profit revenue investor stock bank merger company quarterly earnings"
    " economy trade price deal startup dividend inflation budget".split(),
    "science": "research study scientists experiment laboratory physics biology space telescope planet"
    " molecule theory discovery genome climate fossil quantum neuron vaccine".split(),
    "politics": "election government minister parliament vote policy senate president campaign law"
    " reform treaty diplomat party coalition court protest governor mayor".split(),
    "music": "album song band concert guitar singer melody lyrics tour orchestra rhythm chorus"
    " festival drummer piano studio record jazz opera".split(),
    "food": "recipe kitchen chef flavor restaurant bread cheese spicy dinner oven garlic dessert"
    " sauce noodle bakery soup menu vegetable grill".split(),
}
FILLER = "the a of and in to on for with today yesterday new report said after over about this week".split()


def make_synthetic(
    n: int, *, num_classes: int = 4, ambiguity: float = 0.25, seed: int = 0
) -> tuple[list[str], np.ndarray, list[str]]:
    """Return ``(texts, labels, label_names)``, balanced over classes, fully determined by the arguments."""
    if not 2 <= num_classes <= len(TOPICS):
        raise ValueError(f"data.num_classes: synthetic data supports 2..{len(TOPICS)} classes, got {num_classes}")
    names = list(TOPICS)[:num_classes]
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    texts = []
    for y in labels:
        words = []
        for _ in range(int(rng.integers(6, 13))):
            u = rng.random()
            if u < 0.35:
                words.append(FILLER[rng.integers(len(FILLER))])
            else:
                topic = names[y]
                if rng.random() < ambiguity:
                    topic = names[rng.integers(num_classes)]
                vocab = TOPICS[topic]
                words.append(vocab[rng.integers(len(vocab))])
        texts.append(" ".join(words))
    return texts, labels.astype(np.int64), names
