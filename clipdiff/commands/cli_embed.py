"""python -m clipdiff embed: CLIP image (and caption) embeddings of a training set, for train-unet."""
from __future__ import annotations

import argparse

from .. import data as data_mod
from ..embed import export_csv, precompute
from ..encoders import ClipEncoder


def main(argv=None):
    parser = argparse.ArgumentParser(prog="clipdiff embed", description=__doc__)
    parser.add_argument("--data", default=None, help="shared data folder, captions.jsonl or image folder tree "
                                                     "(default: ../shared/data)")
    parser.add_argument("--clip", default="default", help="'default', a local-dir folder, or an open_clip name")
    parser.add_argument("--clip-pretrained", default=None, help="pretrained tag or weights file for --clip NAME")
    parser.add_argument("--out", default="runs/embeddings")
    parser.add_argument("--image-size", type=int, default=64, help="size the images are loaded at")
    parser.add_argument("--no-text", action="store_true", help="skip caption embeddings")
    parser.add_argument("--csv", default=None, help="also write the image embeddings as CSV (the reference's clip.csv)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    encoder = ClipEncoder.load(args.clip, args.clip_pretrained, args.device)
    ds = data_mod.load_training_data(args.data, args.image_size)
    table = precompute(encoder, ds, args.out, with_text=not args.no_text)
    print(f"{len(ds)} images, {len(table.text)} captions, {table.dim}-d embeddings of {encoder.identity} -> {args.out}")
    if args.csv:
        export_csv(table, args.csv)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
