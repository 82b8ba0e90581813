"""What an erase run did, as typed records, from the loop to the files.

The loop (`gate.unlearn.trainer`) fills `FindingOutcome` and `EpochLog`; `erase_model`
gathers them with the settings, sizes, hashes and utility figures into a `Remediation`;
the gate pipeline puts that same object into the run record. JSON appears only at the
file boundary: ``remediation.json`` is `Remediation.write` (settings under their policy
keys), read back by `Remediation.read`. Ids, counts and figures only: no secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from audit.errors import InputError
from audit.hub import HubRevision
from audit.io import atomic_write_text
from audit.measurements import Measurement, Thresholds
from gate import __version__
from gate.unlearn.settings import UnlearnConfig
from gate.verdict import SanityInfo, UtilityFigures

RECORD_NAME = "remediation.json"


@dataclass
class FindingOutcome:
    """How unlearning ended for one finding (ids and numbers only, no secret)."""

    finding_id: str
    before: Measurement
    after: Measurement | None = None
    forgotten_epoch: int | None = None  # the epoch it was last found forgotten
    stop_reason: str = "not reached"

    @property
    def forgotten(self) -> bool:
        return self.forgotten_epoch is not None


@dataclass(frozen=True)
class EpochLog:
    """One epoch's progress: mean loss parts and what the re-measure found."""

    epoch: int
    steps: int
    loss: dict[str, float]
    measured: int  # findings measured in full (MA, EL, extraction) after the epoch
    screened: int  # findings whose MA alone showed they are not forgotten yet
    ma_mean: float  # over the findings measured or screened
    el_10_mean: float | None  # over the findings measured in full (None: none was)
    extracted: int  # findings extracted greedily, all forget findings (latest measurement)
    remaining: int  # findings still to forget
    seconds: float
    heldout_change: float | None = None  # held-out slice perplexity vs the erase's start


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LrTrial(_Part):
    """One rung of the probe: the gauge's figure after its steps (None: the loss was not
    finite)."""

    lr: float
    retain_kl: float | None  # the gauge is the retain KL (nats per token)
    heldout_change: float | None = None  # the gauge is the held-out perplexity increase


class LrProbe(_Part):
    """What `auto` chose and why (in remediation.json)."""

    chosen: float
    kl_budget: float  # the rung's limit: a retain KL, or a held-out increase (`gauge`)
    gauge: str = "retain KL"  # or "held-out perplexity"
    steps: int  # per rung
    windows: int  # forget windows stepped on
    trials: list[LrTrial]
    seconds: float
    changes: list[str] = []  # the steering's changes during the loop, by epoch


class SampleCounts(_Part):
    """What the run trained and measured on."""

    forget_findings: int
    forget_windows: int
    distinct_probes: int  # probes with a distinct (prefix, secret): copies measured once
    retain_windows: int
    forgotten: int


class KLReference(_Part):
    """How p0 was held for the KL terms, and its memory."""

    kind: str
    bytes: int


class Remediation(_Part):
    """remediation.json: what was erased, how, and what it cost (no secret in here)."""

    config: UnlearnConfig  # the method and settings in force (windows cut to the context)
    prefix_tokens: int  # the attacker's prompt the findings were measured with
    device: str
    dtype: str
    forget_findings: list[str]  # ids of the findings erased
    forget_samples: int  # training samples they are in
    epochs: int  # epochs run
    best_epoch: int  # the epoch whose weights were kept
    steps: int  # forget batches trained on
    stop_reason: str
    wall_seconds: float = 0.0  # the whole erase, loading and writing included
    unlearn_seconds: float  # the unlearning loop alone
    peak_memory_bytes: int  # peak resident memory of the process
    peak_gpu_memory_bytes: int = 0  # peak GPU memory allocated by torch (0: no GPU)
    input_path: str = ""
    output_path: str = ""
    input_sha256: str = ""  # `weights_sha256` of the input folder (unchanged by erase)
    input_hub: HubRevision | None = None  # the Hub model and commit the input was
    output_sha256: str = ""
    thresholds: Thresholds
    samples: SampleCounts
    kl_reference: KLReference
    outcomes: list[FindingOutcome]  # per finding, in the forget set's order
    history: list[EpochLog]  # per epoch
    lr_probe: LrProbe | None = None  # lr auto: the probe's rungs and the steering's changes
    utility: UtilityFigures = Field(default_factory=UtilityFigures)  # before and after
    sanity: dict[str, SanityInfo] = Field(default_factory=dict)  # the input's and the output's
    processes: int = 1  # processes that trained together (accelerate launch)
    mixed_precision: str = "no"  # autocast in force (the option, or the launcher's config)
    trainable_parameters: int = 0  # parameters updated (LoRA: the adapters only)
    optimizer_states: str = "float32"  # dtype of AdamW's moments (`optimizer_states` resolved)
    gradient_checkpointing: bool = False  # layers recomputed in the backward pass (as decided)
    tool: str = f"codeeraser {__version__}"

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def forgotten(self) -> int:
        return sum(1 for o in self.outcomes if o.forgotten)

    def args(self) -> dict[str, Any]:
        """The settings in force under their policy keys (`lambda`, `max_epochs`, ...)."""
        return self.config.model_dump(mode="json", by_alias=True, exclude={"method"})

    def details(self) -> dict[str, Any]:
        """What the report's table leaves out: the loop's figures, per epoch and finding."""
        shown = {"config", "forget_findings", "utility", "tool", "wall_seconds", "stop_reason"}
        return self.model_dump(mode="json", exclude=shown)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"

    def write(self, folder: Path) -> None:
        """Write remediation.json into `folder` (atomically)."""
        atomic_write_text(folder / RECORD_NAME, self.to_json())

    @classmethod
    def read(cls, folder: Path) -> Remediation:
        """The remediation.json of a remediated model folder."""
        path = folder / RECORD_NAME
        try:
            return cls.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise InputError(f"{path}: not the remediation record of this version") from exc
