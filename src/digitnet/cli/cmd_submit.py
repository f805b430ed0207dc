"""``digitnet submit``: write a Kaggle 'Digit Recognizer' submission (ImageId,Label)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="predict Kaggle's test.csv and write submission.csv (ImageId,Label)",
        description="Predict every image of a Kaggle 'Digit Recognizer' test.csv (or any IDX/CSV/npz file) "
        "with MODEL and write the submission format: a header 'ImageId,Label', then one row per "
        "image, ImageId counting from 1.",
    )
    parser.add_argument("model", metavar="MODEL", help="model file or run directory")
    parser.add_argument("test_file", metavar="TEST_CSV", help="Kaggle test.csv (or another data file)")
    parser.add_argument("-o", "--output", metavar="SUBMISSION_CSV", default="submission.csv",
                        help="where to write (default submission.csv); written atomically")
    parser.set_defaults(func=run)


def run(args) -> int:
    from digitnet.atomic import write_text
    from digitnet.data.formats import load_file
    from digitnet.io import load_model
    from digitnet.predict import predict_proba_images

    loaded = load_model(args.model)
    data = load_file(args.test_file)
    labels = predict_proba_images(loaded.model, data.images).argmax(axis=1)
    lines = ["ImageId,Label", *(f"{i},{label}" for i, label in enumerate(labels, start=1))]
    write_text(args.output, "\n".join(lines) + "\n")
    print(f"wrote {len(labels):,} predictions to {args.output}")
    return 0
