"""The vote store: blind battles and the human votes on them, in SQLAlchemy.

A local SQLite file (WAL mode) by default, any SQLAlchemy URL (PostgreSQL) for several
replicas. One vote per battle is enforced by the database itself: a unique constraint on
``votes.battle_id`` and a conditional ``open -> voted`` update inside the same transaction,
so two racing requests cannot both succeed whichever replica serves them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from dollar.ranking import ANSWERS, CRITERIA  # the vocabulary lives with the pure ranking math

CRITERION_QUESTIONS = {
    "visual_quality": "Visual quality: which video looks better (sharp, clean, no artefacts)?",
    "text_alignment": "Text-video alignment: which video matches the prompt better?",
    "motion": "Motion: which video moves better (natural, smooth, as described)?",
    "overall": "Overall preference: which video do you prefer?",
}
CRITERION_NAMES = {"visual_quality": "Visual quality", "text_alignment": "Text-video alignment", "motion": "Motion", "overall": "Overall"}
ANSWER_LABELS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
PROMPT_ORIGINS = ("heldout", "user")
BATTLE_STATUSES = ("open", "voted", "skipped", "void")
DEFAULT_BATTLE_TTL_S = 30 * 60
ENV_DATA_DIR = "DOLLAR_DATA_DIR"
ENV_DB_URL = "DOLLAR_DB_URL"
# What the public export holds: counted votes, no session, rater, battle id, seed or timing.
PUBLIC_COLUMNS = ("date", "prompt", "model_a", "model_b", *CRITERIA, "app_version")

log = logging.getLogger(__name__)


class VoteError(ValueError):
    """A vote or battle request that cannot be honoured; the message says what to do."""


class StoreError(VoteError):
    """The database failed (read-only folder, full disk, server down); the message names the
    folder or URL and what to do, and holds no SQL and no stored field."""


@dataclass(frozen=True)
class RaterLimits:
    """What one rater (one client address, whatever session it claims) may do; 0 turns a limit off."""

    min_view_s: float = 4.0  # a vote counts only this long after both videos were served (two plays of a 2 s clip)
    battles_per_minute: int = 12
    votes_per_day: int = 50


NO_LIMITS = RaterLimits(0.0, 0, 0)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC: SQLite and PostgreSQL agree


class Base(DeclarativeBase):
    pass


class ShownPair:
    """The facts of a pair shown blind, which a battle holds and its vote copies (so an export is
    self-contained). ``sort_order`` keeps each table's column order: the row's own leading columns,
    these, the row's own others (``sort_order=2``), then :class:`RaterColumns`."""

    prompt: Mapped[str] = mapped_column(sa.Text, sort_order=1)
    prompt_origin: Mapped[str] = mapped_column(sa.String(16), sort_order=1)
    counts_for_board: Mapped[bool] = mapped_column(sa.Boolean, sort_order=1)
    seed: Mapped[int] = mapped_column(sa.BigInteger, sort_order=1)
    model_a: Mapped[str] = mapped_column(sa.String(256), sort_order=1)
    model_b: Mapped[str] = mapped_column(sa.String(256), sort_order=1)
    swapped: Mapped[bool] = mapped_column(sa.Boolean, sort_order=1)
    video_hash_a: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, sort_order=1)
    video_hash_b: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, sort_order=1)


class RaterColumns:
    """Who voted (a salted hash of the address, never the address) and, on a check battle, the side that must win."""

    client_key: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True, sort_order=3)
    check_side: Mapped[str | None] = mapped_column(sa.String(1), nullable=True, sort_order=3)


class BattleRow(ShownPair, RaterColumns, Base):
    """A pair of videos shown blind. ``model_a`` is on the left; ``swapped`` says the pairing
    drawn as (first, second) was shown as (second, first). ``client_key`` names the rater by its
    address (a salted hash, never the address); ``check_side`` is set on a check battle (the
    teacher against a deliberately broken render) to the side that must win."""

    __tablename__ = "battles"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    session_hash: Mapped[str] = mapped_column(sa.String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime)
    shown_at: Mapped[datetime | None] = mapped_column(sa.DateTime, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime)
    pool_item: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True, sort_order=2)
    status: Mapped[str] = mapped_column(sa.String(16), index=True, sort_order=2)
    void_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True, sort_order=2)


class VoteRow(ShownPair, RaterColumns, Base):
    """One vote; a copy of the battle's facts so that an export is self-contained."""

    __tablename__ = "votes"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    battle_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("battles.id"), unique=True)
    session_hash: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime, index=True)
    visual_quality: Mapped[str] = mapped_column(sa.String(8), sort_order=2)
    text_alignment: Mapped[str] = mapped_column(sa.String(8), sort_order=2)
    motion: Mapped[str] = mapped_column(sa.String(8), sort_order=2)
    overall: Mapped[str] = mapped_column(sa.String(8), sort_order=2)
    time_to_vote_s: Mapped[float | None] = mapped_column(sa.Float, nullable=True, sort_order=2)
    app_version: Mapped[str] = mapped_column(sa.String(32), sort_order=2)


class SettingRow(Base):
    """Per-deployment values every replica shares (the salt of the rater keys)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)


VOTE_COLUMNS = tuple(c.name for c in VoteRow.__table__.columns)
# The full export: every stored vote, with its rater and whether the board counts it.
FULL_COLUMNS = (*VOTE_COLUMNS, "rater", "rater_flagged", "counted")


@dataclass(frozen=True)
class Battle:
    id: str
    session_hash: str
    prompt: str
    prompt_origin: str
    counts_for_board: bool
    seed: int
    model_a: str
    model_b: str
    swapped: bool
    status: str
    created_at: datetime
    expires_at: datetime
    shown_at: datetime | None = None
    video_hash_a: str | None = None
    video_hash_b: str | None = None
    pool_item: str | None = None
    client_key: str | None = None
    check_side: str | None = None


def default_data_dir() -> str:
    """``$DOLLAR_DATA_DIR``; else ``/data`` (a Space's persistent storage) when writable; else ./data."""
    if os.environ.get(ENV_DATA_DIR):
        return os.environ[ENV_DATA_DIR]
    if os.path.isdir("/data") and os.access("/data", os.W_OK):
        return "/data"
    return os.path.abspath("data")


def default_db_url() -> str:
    """``$DOLLAR_DB_URL`` (any SQLAlchemy URL); else SQLite in the data directory."""
    if os.environ.get(ENV_DB_URL):
        return os.environ[ENV_DB_URL]
    folder = default_data_dir()
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{os.path.join(folder, 'votes.sqlite')}"


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable with WAL, without an fsync per vote
    cursor.execute("PRAGMA busy_timeout=30000")  # writers queue instead of failing under load
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _add_missing_columns(engine: sa.Engine) -> None:
    """A store made by an older version gains the columns added since (all nullable) and their indexes."""
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        for table in Base.metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
            for index in table.indexes:
                index.create(conn, checkfirst=True)


class VoteStore:
    """Battles and votes. ``url``: a SQLAlchemy URL (default: :func:`default_db_url`);
    ``limits``: what one rater may do (:class:`RaterLimits`)."""

    def __init__(
        self,
        url: str | None = None,
        battle_ttl_s: float = DEFAULT_BATTLE_TTL_S,
        app_version: str = "",
        mirror=None,
        limits: RaterLimits = NO_LIMITS,
    ):
        self.url = url or default_db_url()
        self.battle_ttl = timedelta(seconds=battle_ttl_s)
        self.app_version = app_version
        self.mirror = mirror
        self.limits = limits
        is_sqlite = self.url.startswith("sqlite")
        kwargs = {"connect_args": {"check_same_thread": False, "timeout": 30}} if is_sqlite else {"pool_pre_ping": True}
        with self._failures("open"):
            self.engine = sa.create_engine(self.url, **kwargs)
            if is_sqlite:
                event.listen(self.engine, "connect", _sqlite_pragmas)
                # pysqlite's own BEGIN handling defers the write lock; take it at BEGIN instead so two
                # writers never deadlock upgrading from a read lock.
                event.listen(self.engine, "connect", lambda conn, _rec: setattr(conn, "isolation_level", None))
                event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
            Base.metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
            self._session = sessionmaker(self.engine, expire_on_commit=False)
            # Reads take no write lock: with WAL they run alongside the one writer.
            read_engine = sa.create_engine(self.url, **kwargs) if is_sqlite else self.engine
            if is_sqlite:
                event.listen(read_engine, "connect", _sqlite_pragmas)
            self._read = sessionmaker(read_engine, expire_on_commit=False)
            self._salt = self._setting("rater_salt", lambda: secrets.token_hex(16))  # a write: a read-only store fails here, at start
        self._lock = threading.Lock()

    # --- failures ------------------------------------------------------------------------

    def where(self) -> str:
        """The folder of a SQLite store, else the URL without its password."""
        try:
            url = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError:
            return "(an unreadable URL)"
        if url.get_backend_name() == "sqlite" and url.database:
            return os.path.dirname(os.path.abspath(url.database))
        return url.render_as_string(hide_password=True)

    @contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        """Database errors become one sentence (the full error goes to the server log only)."""
        try:
            yield
        except VoteError:
            raise
        except (sa.exc.SQLAlchemyError, OSError) as err:
            orig = getattr(err, "orig", None) or err
            reason = str(orig).splitlines()[0][:160] if str(orig) else type(orig).__name__
            log.error("vote store at %s: %s failed: %s: %s", self.where(), doing, type(orig).__name__, reason)
            if self.url.startswith("sqlite"):
                raise StoreError(
                    f"The vote store in {self.where()} could not {doing} ({reason}); "
                    f"make that folder writable, or start the app with --data-dir (or DOLLAR_DATA_DIR) set to a writable folder."
                ) from None
            raise StoreError(
                f"The vote database at {self.where()} could not {doing} ({reason}); "
                f"check that the server is running and that --db (or DOLLAR_DB_URL) is right, then try again."
            ) from None

    def _setting(self, key: str, make) -> str:
        with self._session.begin() as s:
            row = s.get(SettingRow, key)
            if row is None:
                row = SettingRow(key=key, value=make())
                s.add(row)
            return row.value

    def rater_key(self, address: str) -> str:
        """The key a client address is known by: salted, so the store never holds the address."""
        return hashlib.sha256(f"{self._salt}|{address}".encode()).hexdigest()[:32]

    # --- battles ------------------------------------------------------------------------

    def check_battle_rate(self, client_key: str | None) -> None:
        """Refuse a new battle to a client that was served ``battles_per_minute`` in the last minute."""
        limit = self.limits.battles_per_minute
        if not limit or client_key is None:
            return
        with self._failures("read the battles"), self._read() as s:
            q = sa.select(sa.func.count()).where(BattleRow.client_key == client_key, BattleRow.created_at > _now() - timedelta(minutes=1))
            if s.scalar(q) >= limit:
                raise VoteError(f"This address was served {limit} rounds in the last minute, the most the arena serves; wait a minute.")

    def create_battle(
        self,
        session_hash: str,
        prompt: str,
        prompt_origin: str,
        seed: int,
        model_a: str,
        model_b: str,
        swapped: bool,
        pool_item: str | None = None,
        client_key: str | None = None,
        check_side: str | None = None,
    ) -> Battle:
        if prompt_origin not in PROMPT_ORIGINS:
            raise VoteError(f"prompt_origin must be one of {PROMPT_ORIGINS}, got {prompt_origin!r}.")
        now = _now()
        row = BattleRow(
            id=str(uuid.uuid4()),
            session_hash=session_hash,
            created_at=now,
            expires_at=now + self.battle_ttl,
            prompt=prompt,
            prompt_origin=prompt_origin,
            counts_for_board=prompt_origin != "user" and check_side is None,
            seed=int(seed),
            model_a=model_a,
            model_b=model_b,
            swapped=bool(swapped),
            pool_item=pool_item,
            status="open",
            client_key=client_key,
            check_side=check_side,
        )
        with self._failures("store a new battle"), self._session.begin() as s:
            s.add(row)
        return _battle(row)

    def mark_shown(self, battle_id: str, video_hash_a: str, video_hash_b: str) -> Battle:
        """Both videos are ready and shown now: the clock for the vote and the expiry start here."""
        now = _now()
        with self._failures("store a new battle"), self._session.begin() as s:
            row = s.get(BattleRow, battle_id)
            if row is None:
                raise VoteError(f"Battle {battle_id} does not exist; start a new round.")
            row.video_hash_a, row.video_hash_b = video_hash_a, video_hash_b
            row.shown_at, row.expires_at = now, now + self.battle_ttl
            return _battle(row)

    def get_battle(self, battle_id: str) -> Battle | None:
        with self._failures("read the battles"), self._read() as s:
            row = s.get(BattleRow, str(battle_id))
            return None if row is None else _battle(row)

    def void_battle(self, battle_id: str, reason: str) -> None:
        """A battle whose generation failed: it never gets a vote and never counts."""
        with self._failures("void a battle"), self._session.begin() as s:
            s.execute(
                sa.update(BattleRow)
                .where(BattleRow.id == battle_id, BattleRow.status == "open")
                .values(status="void", void_reason=reason[:2000])
            )

    def skip_battle(self, battle_id: str, session_hash: str) -> None:
        with self._failures("skip a battle"), self._session.begin() as s:
            row = self._open_battle(s, battle_id, session_hash)
            row.status = "skipped"

    def pair_counts(self) -> dict[frozenset, int]:
        """Battles per unordered model pair that were voted on or are open now: what the
        balanced pairing evens out (open ones count so that parallel raters spread out).
        Check battles are not pairs of models and do not count."""
        now = _now()
        q = (
            sa.select(BattleRow.model_a, BattleRow.model_b, sa.func.count())
            .where((BattleRow.status == "voted") | ((BattleRow.status == "open") & (BattleRow.expires_at > now)))
            .where(BattleRow.check_side.is_(None))
            .group_by(BattleRow.model_a, BattleRow.model_b)
        )
        counts: dict[frozenset, int] = {}
        with self._failures("read the battles"), self._read() as s:
            for a, b, n in s.execute(q):
                key = frozenset((a, b))
                counts[key] = counts.get(key, 0) + n
        return counts

    def pool_items_seen(self, session_hash: str, client_key: str | None = None) -> set[str]:
        """Pool battles this session, or any session from this client's address, was shown."""
        seen = BattleRow.session_hash == session_hash
        if client_key is not None:
            seen = seen | (BattleRow.client_key == client_key)
        with self._failures("read the battles"), self._read() as s:
            q = sa.select(BattleRow.pool_item).where(seen, BattleRow.pool_item.is_not(None))
            return {r for (r,) in s.execute(q)}

    def pool_item_uses(self) -> dict[str, int]:
        with self._failures("read the battles"), self._read() as s:
            q = sa.select(BattleRow.pool_item, sa.func.count()).where(BattleRow.pool_item.is_not(None)).group_by(BattleRow.pool_item)
            return {item: n for item, n in s.execute(q)}

    def battle_status_counts(self) -> dict[str, int]:
        with self._failures("read the battles"), self._read() as s:
            return {st: n for st, n in s.execute(sa.select(BattleRow.status, sa.func.count()).group_by(BattleRow.status))}

    # --- votes --------------------------------------------------------------------------

    def record_vote(self, battle_id: str, session_hash: str, answers: dict[str, str], client_key: str | None = None) -> dict:
        """Store the four answers for a battle (``A``, ``B``, ``tie`` or ``both_bad`` each) and
        return the vote with both identities. Raises :class:`VoteError` for a battle that does
        not exist, has expired, belongs to another session, already has its vote, was shown
        less than ``limits.min_view_s`` ago, or a rater past ``limits.votes_per_day``."""
        missing = [CRITERION_NAMES[c] for c in CRITERIA if not answers.get(c)]
        if missing:
            raise VoteError(f"Answer all four questions before voting (missing: {', '.join(missing)}).")
        bad = [CRITERION_NAMES[c] for c in CRITERIA if answers[c] not in ANSWERS]
        if bad:
            raise VoteError(f"Each answer must be one of {', '.join(ANSWERS)}; {', '.join(bad)} got something else.")
        now = _now()
        try:
            with self._failures("store the vote"), self._session.begin() as s:
                row = self._open_battle(s, battle_id, session_hash)
                self._check_vote_limits(s, row, client_key, now)
                # The conditional update is the lock: only one transaction moves open -> voted.
                done = s.execute(
                    sa.update(BattleRow)
                    .where(BattleRow.id == row.id, BattleRow.status == "open")
                    .values(status="voted")
                    .execution_options(synchronize_session=False)
                )
                if done.rowcount != 1:
                    raise VoteError("This battle already has its vote; press New round for another.")
                vote = VoteRow(
                    battle_id=row.id,
                    session_hash=session_hash,
                    created_at=now,
                    prompt=row.prompt,
                    prompt_origin=row.prompt_origin,
                    counts_for_board=row.counts_for_board,
                    seed=row.seed,
                    model_a=row.model_a,
                    model_b=row.model_b,
                    swapped=row.swapped,
                    video_hash_a=row.video_hash_a,
                    video_hash_b=row.video_hash_b,
                    time_to_vote_s=(now - row.shown_at).total_seconds() if row.shown_at else None,
                    app_version=self.app_version,
                    client_key=client_key or row.client_key,
                    check_side=row.check_side,
                    **{c: answers[c] for c in CRITERIA},
                )
                s.add(vote)
                s.flush()
                record = _vote_dict(vote)
        except IntegrityError as err:
            raise VoteError("This battle already has its vote; press New round for another.") from err
        if self.mirror is not None:
            self.mirror.append(record)
        return record

    def _check_vote_limits(self, s: Session, row: BattleRow, client_key: str | None, now: datetime) -> None:
        wait = self.limits.min_view_s - ((now - row.shown_at).total_seconds() if row.shown_at else 0.0)
        if self.limits.min_view_s and wait > 0:
            raise VoteError(
                f"Watch both videos first: votes open {self.limits.min_view_s:g} s after the round starts ({wait:.1f} s to go), then submit again."
            )
        cap = self.limits.votes_per_day
        if cap and client_key is not None:
            q = (
                sa.select(sa.func.count())
                .select_from(VoteRow)
                .where(VoteRow.client_key == client_key, VoteRow.created_at > now - timedelta(days=1))
            )
            if s.scalar(q) >= cap:
                raise VoteError(
                    f"This address has cast {cap} votes in the last 24 hours, the most the arena takes from one rater; thank you, come back tomorrow."
                )

    def count_votes(self) -> int:
        with self._failures("read the votes"), self._read() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(VoteRow))

    def votes(self) -> list[dict]:
        """Every stored vote, oldest first, as plain dicts (flagged, check and users' own included)."""
        with self._failures("read the votes"), self._read() as s:
            return [_vote_dict(v) for v in s.scalars(sa.select(VoteRow).order_by(VoteRow.id))]

    def votes_dataframe(self):
        """Every stored vote with its ``rater`` (address key, else session), ``rater_flagged``
        and ``counted`` (held-out prompt, not a check battle, rater not flagged)."""
        import pandas as pd

        votes = pd.DataFrame(self.votes(), columns=list(VOTE_COLUMNS))
        votes["rater"] = [k if isinstance(k, str) else f"session:{s}" for k, s in zip(votes["client_key"], votes["session_hash"])]
        flagged = flagged_raters(votes)
        votes["rater_flagged"] = votes["rater"].isin(flagged)
        votes["counted"] = votes["counts_for_board"].astype(bool) & votes["check_side"].isna() & ~votes["rater_flagged"]
        return votes[list(FULL_COLUMNS)]

    def board_votes(self):
        """The votes the leaderboard and the public export count, with their ``rater``."""
        votes = self.votes_dataframe()
        return votes[votes["counted"]].reset_index(drop=True)

    def export_public(self, folder: str) -> tuple[str, str]:
        """``votes.csv`` and ``votes.jsonl`` of the counted votes in :data:`PUBLIC_COLUMNS`:
        no session, rater, battle id, seed, timing or user's own prompt."""
        votes = self.board_votes()
        votes["date"] = votes["created_at"].str[:10]
        return _write_exports(votes[list(PUBLIC_COLUMNS)], folder)

    def export_full(self, folder: str) -> tuple[str, str]:
        """Every stored vote in :data:`FULL_COLUMNS` (for the operator: behind the admin token)."""
        return _write_exports(self.votes_dataframe(), folder)

    # --- internals ----------------------------------------------------------------------

    def _open_battle(self, s: Session, battle_id: str, session_hash: str) -> BattleRow:
        try:
            uuid.UUID(str(battle_id))
        except ValueError:
            raise VoteError(f"Battle {str(battle_id)[:64]!r} does not exist; press New round to get one.") from None
        row = s.get(BattleRow, str(battle_id))
        if row is None:
            raise VoteError(f"Battle {battle_id} does not exist; press New round to get one.")
        if row.session_hash != session_hash:
            raise VoteError("This battle was shown to another session; press New round to get your own.")
        if row.status == "voted":
            raise VoteError("This battle already has its vote; press New round for another.")
        if row.status == "void":
            raise VoteError("This battle was void (its videos could not be made); press New round.")
        if row.status != "open":
            raise VoteError(f"This battle was {row.status}; press New round.")
        if row.expires_at <= _now():
            minutes = self.battle_ttl.total_seconds() / 60
            raise VoteError(f"This battle expired (battles stay open {minutes:g} minutes); press New round.")
        return row


def flagged_raters(votes) -> set[str]:
    """Raters who failed at least half of their check battles (a check is passed when the
    overall answer names the side that must win): their votes stay stored but do not count."""
    checks = votes[votes["check_side"].notna()]
    failed = (checks["overall"] != checks["check_side"]).groupby(checks["rater"]).mean()
    return set(failed[failed >= 0.5].index)


def _write_exports(votes, folder: str) -> tuple[str, str]:
    """CSV and JSONL in a fresh folder of their own: two exports never share a file."""
    import tempfile

    os.makedirs(folder, exist_ok=True)
    out = tempfile.mkdtemp(dir=folder)
    csv_path, jsonl_path = os.path.join(out, "votes.csv"), os.path.join(out, "votes.jsonl")
    votes.to_csv(csv_path, index=False)
    votes.to_json(jsonl_path, orient="records", lines=True, force_ascii=False)
    return csv_path, jsonl_path


def _battle(row: BattleRow) -> Battle:
    return Battle(
        id=row.id,
        session_hash=row.session_hash,
        prompt=row.prompt,
        prompt_origin=row.prompt_origin,
        counts_for_board=row.counts_for_board,
        seed=row.seed,
        model_a=row.model_a,
        model_b=row.model_b,
        swapped=row.swapped,
        status=row.status,
        created_at=row.created_at,
        expires_at=row.expires_at,
        shown_at=row.shown_at,
        video_hash_a=row.video_hash_a,
        video_hash_b=row.video_hash_b,
        pool_item=row.pool_item,
        client_key=row.client_key,
        check_side=row.check_side,
    )


def _vote_dict(v: VoteRow) -> dict:
    out = {c: getattr(v, c) for c in VOTE_COLUMNS}
    out["created_at"] = v.created_at.isoformat() + "Z"
    return out


class HubMirror:
    """Mirror every vote to a Hugging Face dataset: each vote is appended to a JSONL file that
    huggingface_hub's ``CommitScheduler`` pushes every ``every_minutes``. Off unless configured
    (``DOLLAR_HF_DATASET`` + ``HF_TOKEN``)."""

    def __init__(self, repo_id: str, folder: str, token: str | None = None, every_minutes: float = 5.0, scheduler=None):
        os.makedirs(folder, exist_ok=True)
        if scheduler is None:
            from huggingface_hub import CommitScheduler

            scheduler = CommitScheduler(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=folder,
                path_in_repo="votes",
                every=every_minutes,
                token=token,
                private=True,
            )
        self.scheduler = scheduler
        # One file per process: replicas never write the same file, so no push overwrites another.
        self.path = os.path.join(folder, f"votes-{uuid.uuid4().hex}.jsonl")

    def append(self, vote: dict) -> None:
        with self.scheduler.lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(vote, ensure_ascii=False) + "\n")

    @classmethod
    def from_env(cls, data_dir: str) -> HubMirror | None:
        repo_id = os.environ.get("DOLLAR_HF_DATASET")
        if not repo_id:
            return None
        every = float(os.environ.get("DOLLAR_HF_PUSH_MINUTES", "5"))
        return cls(repo_id, os.path.join(data_dir, "hub-mirror"), token=os.environ.get("HF_TOKEN"), every_minutes=every)
