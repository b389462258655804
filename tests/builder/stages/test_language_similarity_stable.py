"""`language_similarity` gives the same float in every process, whatever Python's string hashing."""

from __future__ import annotations

import os
import subprocess
import sys

# Several scripts and several Latin stopword languages in both texts: the shared keys form sets of 3 or more.
A = ("The cat is on the table and el perro de la casa, le chat est dans la maison, der Hund und die Katze. "
     "Привет как дела это тест. Γειά σου κόσμε αυτό είναι. 日本語のテキストです。")
B = ("This is what the man said to the dog: la casa es de ellos y el gato no, les enfants et le jardin, "
     "die Kinder sind nicht hier. Это другой текст. Καλημέρα σας. 中文文本。")
CODE = f"from crome.text import language_similarity; print(repr(language_similarity({A!r}, {B!r})))"


def test_language_similarity_is_the_same_under_every_hash_seed():
    seen = set()
    for seed in range(12):
        out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)})
        seen.add(out.stdout.strip())
    assert len(seen) == 1, seen
