"""python -m clipdiff vocabulary: count the training captions' words into checkpoints/vocabulary.json, what the
token view marks as unknown. The counting itself is clipdiff.vocabulary, which the app reads too."""
from __future__ import annotations

import argparse

from .. import vocabulary
from ..vocabulary import DEFAULT_VOCABULARY, RARE_BELOW, Vocabulary, training_texts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="clipdiff vocabulary", description=vocabulary.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="shared data folder, captions.jsonl or image folder tree "
                                                     "(default: ../shared/data)")
    parser.add_argument("--out", default=str(DEFAULT_VOCABULARY))
    args = parser.parse_args(argv)
    source = "Oxford-102 captions and species-name captions of the training data (clipdiff.data)"
    counted = Vocabulary.count(training_texts(args.data), source)
    path = counted.save(args.out)
    rare = sum(1 for n in counted.counts.values() if n < RARE_BELOW)
    print(f"{counted.texts:,} texts, {len(counted.counts):,} words ({rare:,} seen fewer than {RARE_BELOW} "
          f"times) -> {path} ({path.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
