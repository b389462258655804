"""`CromeConfig`: `TrainingArguments` plus crome's own fields (model, data, the tie-aware loss, LoRA).

Only fields are added, so every Trainer feature (accelerate launch, DeepSpeed, FSDP, bf16, gradient
accumulation, checkpoints) and every TrainingArguments flag on the command line works as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

# Weight dtypes at load, by the name `model_dtype` takes.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


@dataclass
class CromeConfig(TrainingArguments):
    """Training arguments plus crome's own: model, data, the tie-aware loss and optional LoRA."""

    # > model
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hugging Face path or id, loaded as AutoModelForSequenceClassification with one label."}
    )
    model_dtype: str = field(
        default="float32",
        metadata={"help": "Weights dtype at load: float32 (mixed precision via --bf16 keeps fp32 masters), bfloat16, float16, auto."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model/tokenizer code from the Hub."})
    disable_dropout: bool = field(
        default=True, metadata={"help": "Zero dropout: chosen and rejected then see the same network, so d is not noise."}
    )

    # > data
    dataset: str | None = field(default=None, metadata={"help": "Run dir, published folder (DIR/data/*.parquet), Parquet file or Hub id."})
    kinds: list[str] | None = field(
        default=None, metadata={"help": "Row kinds to train on (original causal neutral); all when unset. A baseline uses original: "
                                            "rows with augmentation original, source ties included."}
    )
    eval_split: str | None = field(default="test", metadata={"help": "Split used for evaluation when the data has it."})
    eval_fraction: float = field(
        default=0.0, metadata={"help": "Without an eval split: hold out this share of source pairs (with all their augmentations)."}
    )
    max_length: int | None = field(
        default=1024, metadata={"help": "Max tokens per side; the prompt is cut first. Truncated pairs are counted, never dropped."}
    )
    pad_to_multiple_of: int | None = field(default=None, metadata={"help": "Pad batches to a multiple of this (tensor cores, XLA)."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Use only the first N training rows (smoke tests)."})

    # > loss
    tie_weight: float = field(default=1.0, metadata={"help": "lambda: weight of the tie loss on neutral rows (1.0 in the paper)."})
    loss_normalization: str = field(
        default="pairs",
        metadata={"help": "pairs: mean over all pairs, ties weighted by lambda; per_kind: mean BT over strict pairs + lambda x mean "
                          "tie loss over ties (crome/train/loss.py)."},
    )
    center_rewards: float | None = field(
        default=None, metadata={"help": "Coefficient of mean((r_chosen + r_rejected)^2), keeping rewards centred (e.g. 0.01)."}
    )

    # > LoRA (peft)
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters plus the score head; the merged model is saved."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "Modules to adapt; all linear layers when unset."})

    # > TrainingArguments defaults changed for pairs
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: preference and kind are not model inputs but the loss needs them."}
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "Length-grouped batches by default: fewer pad tokens per step. Also random or sequential."},
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every N update steps."})

    def __post_init__(self):
        super().__post_init__()
        if self.tie_weight < 0:
            raise ValueError("tie_weight must be >= 0")
        if self.loss_normalization not in ("pairs", "per_kind"):
            raise ValueError(f"loss_normalization must be pairs or per_kind, got {self.loss_normalization!r}")
        if self.model_dtype not in DTYPES:
            raise ValueError(f"model_dtype must be one of {', '.join(DTYPES)}")
        if self.kinds:
            # Accept "original,causal" as well as a list.
            self.kinds = [k for item in self.kinds for k in str(item).split(",") if k]
