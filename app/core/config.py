"""The service's settings: one pydantic-settings class, read from environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SQLITE_DEFAULT = "sqlite:///./data/app.db"

# How a task's adapted model is stored (app/services/weights.py); "auto" chooses per task.
Format = Literal["float32", "float16", "bfloat16", "support"]
FORMATS: tuple[Format, ...] = get_args(Format)
StorageMode = Literal["auto"] | Format


class Settings(BaseSettings):
    """Every field is an environment variable of the same name in upper case."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    database_url: str = SQLITE_DEFAULT
    model_dir: Path = Path("models")
    trained_model_dir: Path | None = Field(
        None,
        description="a second folder of meta-models, served beside MODEL_DIR's: where "
        "meta-models trained after the image was built go (compose's `models` volume)",
    )
    model_poll_seconds: float = Field(
        10.0,
        ge=0,
        description="how often each process scans the model folders for new, changed or "
        "removed meta-models (0: only at start and on `python -m app models reload`)",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per process")
    threads: int = Field(
        16,
        ge=1,
        description="threads for blocking work (database, small requests) per process; the "
        "database pool holds as many connections",
    )
    db_pool_timeout: float = Field(
        5.0, gt=0, description="seconds to wait for a database connection before a 503"
    )
    adapt_concurrency: int = Field(2, ge=1, description="adaptations running at once")
    adapt_queue: int = Field(8, ge=0, description="adaptations waiting; beyond: 503")
    adapt_per_client: int = Field(
        1,
        ge=1,
        description="one client's adaptations running or waiting; beyond: 429. Below "
        "ADAPT_CONCURRENCY (when that is over 1), so that one client never holds every slot",
    )
    predict_concurrency: int = Field(
        2,
        ge=1,
        description="large, image, audio or text predictions running at once (on threads)",
    )
    predict_queue: int = Field(16, ge=0, description="large predictions waiting; beyond: 503")
    predict_per_client: int = Field(
        1,
        ge=1,
        description="one client's large predictions running or waiting; beyond: 429. Below "
        "PREDICT_CONCURRENCY (when that is over 1), likewise",
    )
    predict_inline_flops: float = Field(
        1e7,
        ge=0,
        description="a numeric predict of at most rows x the model's FLOPs per row this many "
        "runs on the event loop (microseconds); larger ones and any images, recordings or "
        "sentences, on the pool",
    )
    predict_batching: bool = Field(
        True,
        description="encode the sentences of small text predicts (bodies of up to 2 KiB) "
        "waiting for the predictions pool together, whichever tasks and clients they are for, "
        "in one call of their shared encoder, up to MAX_REQUEST_TOKENS at once; false: each "
        "predict on its own",
    )
    announcements: bool = Field(
        True,
        description="on PostgreSQL, hear other processes' changes through LISTEN/NOTIFY and "
        "trust the caches meanwhile; false: rely on the TTLs (e.g. behind a pooler in "
        "transaction mode, where LISTEN does not work)",
    )
    cache_size: int = Field(
        100_000,
        ge=0,
        description="adapted models kept in memory per process, at most (CACHE_BYTES is the "
        "bound that binds first for all but the smallest models)",
    )
    cache_bytes: int = Field(
        256 * 2**20,
        ge=0,
        description="bytes of adapted models kept in memory per process, at most; when full, "
        "the least recently used model of the client holding the most is evicted",
    )
    cache_ttl_seconds: float = Field(
        5.0, ge=0, description="how long a cached model is served before its task is re-checked"
    )
    task_storage: StorageMode = Field(
        "auto",
        description="how a task's adapted model is stored: float32 (the tensors adaptation "
        "changed), float16 or bfloat16 (their change from the meta-model, at half the bytes), "
        "support (only the support set, which every task keeps: re-adapted on a cache miss), or "
        "auto (float32 where those tensors are small, under READAPT_MIN_BYTES; else support "
        "where re-adapting costs at most READAPT_MAX_FLOPS; else float32)",
    )
    task_storage_by_model: dict[str, StorageMode] = Field(
        default_factory=dict,
        description='TASK_STORAGE for named meta-models, as JSON: {"omniglot-20w1s": "float16"}',
    )
    task_compression: Literal["zlib", "none"] = Field(
        "zlib", description="compress a task's stored weights and support set (lossless)"
    )
    readapt_min_bytes: int = Field(
        16 * 2**10,
        ge=0,
        description="under TASK_STORAGE=auto, a task whose changed tensors take fewer bytes "
        "than this stores them (a sinusoid MLP's 7 KB, an ANIL head): a cache miss then costs "
        "a decode, not an inner loop",
    )
    readapt_max_flops: float = Field(
        1e9,
        ge=0,
        description="under TASK_STORAGE=auto, a task with larger weights is stored as its "
        "support set alone when re-adapting it costs at most this (the model's FLOPs per "
        "row x 3 x support rows x inner steps; 1e9 is about 30 ms of one core)",
    )
    auth_cache_seconds: float = Field(5.0, ge=0, description="how long a checked key is trusted")
    auth_reject_seconds: float = Field(
        5.0, ge=0, description="how long a rejected key is answered 401 without a database read"
    )
    max_support: int = Field(1000, ge=1)
    max_query: int = Field(10_000, ge=1)
    max_predict_rows: int = Field(10_000, ge=1)
    max_label_chars: int = Field(100, ge=1, description="one class label (a string)")
    max_trajectories: int = Field(
        100, ge=1, description="a policy task's trajectories in one request"
    )
    max_trajectory_steps: int = Field(
        1000, ge=1, description="one trajectory's steps (a policy task's rollouts)"
    )
    max_inner_steps: int = Field(100, ge=1)
    max_inner_lr: float = Field(10.0, gt=0)
    max_body_bytes: int = Field(
        8 * 2**20,
        ge=1024,
        description="one request body (a numeric meta-model's bodies: what its row limits "
        "allow, less); bodies over 64 KiB are parsed in pieces on a thread",
    )
    max_body_values: int = Field(
        1_000_000,
        ge=2**15,
        description="the values (numbers, labels, images, recordings, rows) one request body "
        "may hold; "
        "turning numbers into an array holds the interpreter lock about 30 ns each, so this "
        "bounds how long one request can stall its worker",
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="a request's headers must arrive within this; else 408"
    )
    max_header_bytes: int = Field(
        64 * 2**10, ge=1024, description="a request's line and headers; beyond: 431"
    )
    body_timeout_seconds: float = Field(
        60.0, gt=0, description="a request's body must arrive within this of its headers; else 408"
    )
    max_image_bytes: int = Field(4 * 2**20, ge=1024, description="one encoded image")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="one image, before resizing")
    max_image_scale: int = Field(
        32,
        ge=1,
        description="each side of an image at most this many times the model's input side "
        "(a larger JPEG decodes at 1/2, 1/4 or 1/8 of its size if that fits)",
    )
    max_request_pixels: int = Field(
        2**26,
        ge=1,
        description="the pixels all images of one request decode, together; each also counts "
        "against the adaptation's cost (MAX_ADAPT_FLOPS)",
    )
    max_audio_bytes: int = Field(
        4 * 2**20, ge=1024, description="one encoded recording (WAV or FLAC)"
    )
    min_audio_rate: int = Field(
        8000,
        ge=1000,
        le=768_000,
        description="a recording's lowest sample rate, in Hz (one at another rate than the "
        "model's is resampled to it, as in training)",
    )
    max_audio_rate: int = Field(
        96_000, ge=1000, le=768_000, description="a recording's highest sample rate, in Hz"
    )
    max_audio_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="one recording's length, in seconds (the model keeps its own duration of "
        "it, as in training)",
    )
    max_audio_channels: int = Field(
        8, ge=1, le=1024, description="one recording's channels (mixed to mono, as in training)"
    )
    max_request_samples: int = Field(
        2**23,
        ge=1,
        description="the samples (frames x channels) all recordings of one request decode, "
        "together, each rate other than the model's counting its resampling filter's entries "
        "too; each also counts against the adaptation's cost (MAX_ADAPT_FLOPS)",
    )
    max_text_chars: int = Field(
        2000,
        ge=1,
        description="one sentence sent to a text meta-model, in characters (its encoder "
        "truncates beyond its own token limit, as in training)",
    )
    max_request_tokens: int = Field(
        8192,
        ge=1,
        description="the tokens all sentences of one request encode, together (about 1 s of "
        "two cores for all-MiniLM-L6-v2); each also counts against the adaptation's cost "
        "(MAX_ADAPT_FLOPS)",
    )
    retry_after_seconds: int = Field(1, ge=1)
    task_ttl_seconds: int | None = Field(
        None, ge=1, description="a task's lifetime when its request names none (None: forever)"
    )
    purge_interval_seconds: float = Field(
        60.0, gt=0, description="how often each process deletes expired tasks"
    )
    # Per-client limits (defaults; `python -m app clients limits` overrides them per client).
    rate_per_second: float = Field(
        500.0, gt=0, description="a client's sustained requests per second, per process"
    )
    rate_burst: int = Field(1000, ge=1, description="a client's requests at once above the rate")
    max_adapt_flops: float = Field(
        1e11,
        gt=0,
        description="one adaptation's cost: the model's FLOPs per row x (3 x support rows x "
        "inner steps + 2 x (support + query rows)), and its images' or recordings' decoding; "
        "beyond: 422",
    )
    max_adapt_bytes: int = Field(
        512 * 2**20,
        gt=0,
        description="the memory one adaptation may need, as estimated from what the "
        "meta-model's inner loop keeps per row; beyond: 422. A process needs up to "
        "ADAPT_CONCURRENCY times this, besides its cache and meta-models",
    )
    max_tasks_per_client: int = Field(10_000, ge=0, description="tasks one client stores")
    max_stored_bytes_per_client: int = Field(
        2**30, ge=0, description="bytes of adapted weights and support sets one client stores"
    )
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _no_client_holds_a_whole_pool(self) -> Settings:
        pools = (
            ("ADAPT", self.adapt_per_client, self.adapt_concurrency),
            ("PREDICT", self.predict_per_client, self.predict_concurrency),
        )
        for pool, share, concurrency in pools:
            if concurrency > 1 and share >= concurrency:
                raise ValueError(
                    f"{pool}_PER_CLIENT ({share}) must be below {pool}_CONCURRENCY "
                    f"({concurrency}): one client could hold every running slot"
                )
        return self

    @model_validator(mode="after")
    def _audio_rates_in_order(self) -> Settings:
        if self.min_audio_rate > self.max_audio_rate:
            raise ValueError(
                f"MIN_AUDIO_RATE ({self.min_audio_rate}) must be at most MAX_AUDIO_RATE "
                f"({self.max_audio_rate})"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_a_real_database(self) -> Settings:
        if self.environment == "production" and self.database_url == SQLITE_DEFAULT:
            raise ValueError(
                "ENVIRONMENT=production needs DATABASE_URL (PostgreSQL), not the "
                "embedded SQLite default"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
