"""DOLLAR demo and human evaluation: generate & compare, blind arena, leaderboard.

python app.py                          # bundled models from assets/, votes in ./data (or $DOLLAR_DATA_DIR, /data on a Space)
python app.py --model runs/student-4   # add a pipeline folder or hub id (repeatable)
python app.py --pool data/pool         # serve battles rendered ahead (python -m dollar.arena build-pool)
DOLLAR_DB_URL=postgresql+psycopg://... python app.py   # several replicas share one database
DOLLAR_ADMIN_TOKEN=... python app.py   # turns on the full vote export (Leaderboard tab, Admin)

Listens on 127.0.0.1 (0.0.0.0 on a Hugging Face Space, where SPACE_ID is set, or with --host).
Thin: the logic lives in dollar.arena (models, rendering, battles), dollar.votes (the store)
and dollar.ranking (Bradley-Terry); this file only lays out the page and maps errors.
"""

from __future__ import annotations

import argparse
import atexit
import glob
import hmac
import html
import os
import re
import shutil
import tempfile

import gradio as gr
import pandas as pd
import torch

import dollar
from dollar import ranking, world
from dollar.arena import (
    COMPARISON_COLUMNS,
    DEFAULT_CHECK_RATE,
    DEFAULT_ROUND_FLOOR_S,
    Arena,
    ArenaError,
    BattlePool,
    ModelZoo,
    available_models,
    check_seed,
    comparison_table,
    example_prompts,
    model_card,
    prune_files,
    select_models,
)
from dollar.votes import (
    ANSWER_LABELS,
    CRITERIA,
    CRITERION_NAMES,
    CRITERION_QUESTIONS,
    HubMirror,
    RaterLimits,
    VoteStore,
    default_data_dir,
)

ANSWER_CHOICES = [(label, value) for value, label in ANSWER_LABELS.items()]
BOARD_COLUMNS = ["rank", "model", "score", "ci_low", "ci_high", "votes", "wins", "ties", "losses", "status"]
ENV_ADMIN_TOKEN = "DOLLAR_ADMIN_TOKEN"
DEFAULT_MIN_RATERS = 5
MAX_UPLOAD = "10kb"  # the app takes no uploads; Gradio's upload route stays open, so keep it tiny


def user_error(err) -> gr.Error:
    """A mistake the user can fix: shown in the page and returned by the API, not logged as a crash."""
    return gr.Error(str(err), print_exception=False)


def plain(text: str) -> str:
    """``text`` shown as itself inside Markdown: HTML escaped, Markdown punctuation backslash-escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>])", r"\\\1", html.escape(text, quote=False))


# --- inputs that check their own value: one sentence instead of a rounding or Gradio's own error ---


class SeedNumber(gr.Number):
    """The raw value goes to check_seed: 1.5, True, "abc", NaN and infinity are refused, not rounded."""

    is_template = True  # drawn by gr.Number's own frontend (a new class name would need a frontend of its own)

    def preprocess(self, payload):
        try:
            return check_seed(payload)
        except ArenaError as err:
            raise user_error(err) from None


class ModelChoice(gr.CheckboxGroup):
    is_template = True  # drawn by gr.CheckboxGroup's frontend

    def preprocess(self, payload):
        names = [value for _, value in self.choices]
        if not isinstance(payload, list):
            raise user_error(f"models must be a list of model names, e.g. {names[:2]}; got {type(payload).__name__}.")
        unknown = [str(m)[:60] for m in payload if m not in names]
        if unknown:
            raise user_error(f"Unknown model {unknown[0]!r}; choose from: {', '.join(names)}.")
        return payload


class Choice(gr.Radio):
    """A radio whose value must be one of its choices (or empty); ``what`` names it in the message."""

    is_template = True  # drawn by gr.Radio's frontend (which rebuilds it from gr.Radio's own arguments)
    what = "The answer"

    @classmethod
    def named(cls, choices, what: str, **kwargs) -> Choice:
        choice = cls(choices, **kwargs)
        choice.what = what
        return choice

    def preprocess(self, payload):
        values = [value for _, value in self.choices]
        if payload is None or payload in values:
            return payload
        raise user_error(f"{self.what} must be one of {', '.join(map(str, values))}; got {str(payload)[:40]!r}.")


def client_address(request: gr.Request, trust_proxy: bool) -> str:
    """The rater's address: the connection's, or behind a trusted proxy (a Space) the one the
    proxy appended last to X-Forwarded-For (a client can prepend anything, not append)."""
    if trust_proxy:
        forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return request.client.host if request.client else "unknown"


def build_app(
    zoo: ModelZoo,
    arena: Arena,
    store: VoteStore,
    export_dir: str,
    bootstrap_rounds: int = 1000,
    min_votes: int = 30,
    min_raters: int = DEFAULT_MIN_RATERS,
    trust_proxy: bool = False,
    admin_token: str | None = None,
) -> gr.Blocks:
    names = zoo.names
    heldout = [p.prompt for p in world.heldout_prompts(64)]

    def rater(request: gr.Request) -> str:
        return store.rater_key(client_address(request, trust_proxy))

    def generate(prompt, seed, models, fast_decode=False, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (gradio injects it by default value)
        if not isinstance(fast_decode, bool):
            raise user_error(f"Fast decode must be true or false; got {str(fast_decode)[:40]!r}.")
        try:
            progress(0, desc="Rendering (the 50-step teacher takes longest)")
            gens = zoo.compare(prompt, seed, models, fast_decode=fast_decode)
        except ValueError as err:
            raise user_error(err) from None
        finally:
            prune_files(zoo.video_dir, max_age_s=600, max_files=400)
        by_name = {g.model: g for g in gens}
        table = comparison_table(gens)
        updates = []
        for name in names:
            g = by_name.get(name)
            if g is None:
                updates += [gr.Video(value=None, visible=False), gr.Markdown(visible=False)]
                continue
            row = table[table.model == name].iloc[0]
            speed = f", {row['speedup vs teacher']}x vs teacher" if pd.notna(row["speedup vs teacher"]) else ""
            decoder = (
                f" (tiny decoder; the full one: {row['full decode (ms)']:.1f} ms, {row['decode speedup']}x slower; "
                f"tiny vs full {row['tiny vs full (dB)']:.1f} dB PSNR)"
                if "tiny decode (ms)" in row
                else ""
            )
            caption = (
                f"**{name}**: {row['NFE']} NFE; text {row['text (ms)']:.1f} ms, denoise {row['denoise (ms)']:.1f} ms, "
                f"decode {row['decode (ms)']:.1f} ms{decoder}; end to end {row['end to end (s)']:.3f} s{speed}"
            )
            updates += [gr.Video(value=g.video_path, visible=True, label=name), gr.Markdown(caption, visible=True)]
        return [*updates, table, [g.video_path for g in gens]]

    def generate_full(prompt, seed, models, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        return generate(prompt, seed, models, False, progress)

    def arena_new(user_prompt, request: gr.Request):
        try:
            view = arena.new_battle(request.session_hash, user_prompt, client_key=rater(request))
        except ValueError as err:
            raise user_error(err) from None
        own = bool((user_prompt or "").strip())
        origin = "your own; stored, not counted on the public board" if own else "held-out"
        return (
            view.battle_id,
            f"**Prompt** ({origin}): {plain(view.prompt)}",
            view.video_a,
            view.video_b,
            *[None] * len(CRITERIA),
            "Watch both videos, answer the four questions, then press **Submit vote**.",
            gr.Button(interactive=True),
        )

    def arena_vote(battle_id, q1, q2, q3, q4, request: gr.Request):
        if not isinstance(battle_id, str):
            raise user_error("The battle id must be the text New round gave; press New round.")
        try:
            vote = arena.vote(battle_id.strip(), request.session_hash, dict(zip(CRITERIA, (q1, q2, q3, q4))), client_key=rater(request))
        except ValueError as err:
            raise user_error(err) from None
        if vote["check_side"]:
            other = "B" if vote["check_side"] == "A" else "A"
            reveal = (
                f"Thanks, vote stored. This was a check round: **{vote['check_side']}** was the teacher and **{other}** "
                "a deliberately broken copy. Press **New round**."
            )
        else:
            reveal = f"Thanks, vote stored. **A** was **{vote['model_a']}**, **B** was **{vote['model_b']}**. Press **New round**."
        return reveal, gr.Button(interactive=False)

    def arena_skip(battle_id, user_prompt, request: gr.Request):
        if isinstance(battle_id, str) and battle_id.strip():
            try:
                arena.skip(battle_id.strip(), request.session_hash)
            except ValueError:
                pass  # an already voted / expired battle needs no skipping; a new round follows anyway
        return arena_new(user_prompt, request)

    def leaderboard(criterion):
        hidden = [gr.Plot(value=None, visible=False), gr.Plot(value=None, visible=False)]
        empty = pd.DataFrame(columns=BOARD_COLUMNS)
        try:
            votes = store.board_votes()
            stored = store.count_votes()
        except ValueError as err:
            raise user_error(err) from None
        raters = votes["rater"].nunique()
        if len(votes) == 0:
            return "No votes count for the board yet: rate a few battles in the **Arena** tab.", empty, *hidden
        if raters < min_raters:
            return (
                f"{len(votes)} votes from {raters} independent rater{'s' if raters != 1 else ''} so far; "
                f"the board ranks the models once {min_raters} raters have voted.",
                empty,
                *hidden,
            )
        table = ranking.leaderboard(votes, criterion, rounds=bootstrap_rounds, min_votes=min_votes)
        order = list(table["model"])
        title = CRITERION_NAMES[criterion]
        heat = ranking.plot_win_rate_heatmap(ranking.win_rate_matrix(votes, criterion, order), f"{title}: win rate (row vs column)")
        bars = ranking.plot_pair_outcomes(ranking.pair_outcomes(votes, criterion, order), f"{title}: win / tie / lose per pair")
        summary = (
            f"{len(votes)} votes from {raters} raters count for the board ({stored - len(votes)} more are stored but not counted: "
            f"users' own prompts, check rounds and raters who failed their checks). "
            f"Scores: Bradley-Terry on the Elo scale, 95% intervals from {bootstrap_rounds} bootstrap rounds, ties and 'both bad' count half; "
            f"models sharing a rank have overlapping intervals; 'preliminary' = fewer than {min_votes} votes."
        )
        return summary, table, gr.Plot(value=heat, visible=True), gr.Plot(value=bars, visible=True)

    def export():
        try:
            return store.export_public(export_dir)
        except (ValueError, OSError) as err:
            raise user_error(err if isinstance(err, ValueError) else "Writing the export failed; try again in a moment.") from None

    def export_all(token):
        if not admin_token:
            raise user_error(f"The full export is off; the operator turns it on by setting {ENV_ADMIN_TOKEN} before starting the app.")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise user_error("Wrong admin token; the full export needs the value of DOLLAR_ADMIN_TOKEN.")
        try:
            return store.export_full(export_dir)
        except (ValueError, OSError) as err:
            raise user_error(err if isinstance(err, ValueError) else "Writing the export failed; try again in a moment.") from None

    # Gradio's cache keeps every served file; an hourly sweep drops those older than an hour.
    with gr.Blocks(title="DOLLAR: few-step video generation", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# DOLLAR: few-step text-to-video\n"
            "A 50-step teacher, its few-step DDIM baselines and the distilled students (when trained), side by side; "
            "a blind arena for human ratings; and the leaderboard those ratings give."
        )
        with gr.Tab("Generate & compare"):
            with gr.Row():
                with gr.Column(scale=3):
                    prompt = gr.Textbox(label="Prompt", elem_id="prompt", value=heldout[0], lines=2, max_lines=4)
                    models = ModelChoice(names, value=names, label="Models (same prompt, same seed)", elem_id="models")
                with gr.Column(scale=1):
                    seed = SeedNumber(label="Seed (a whole number)", value=0, elem_id="seed")
                    fast = gr.Checkbox(
                        label="Fast decode: the tiny distilled decoder (the full decoder is timed on the same latents)",
                        value=False,
                        elem_id="fast-decode",
                    )
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    api_generate = gr.Button(visible=False)  # /generate: the API's three inputs, the full decoder
            with gr.Accordion("Model cards: how each model was made", open=False):
                for name in names:
                    card = model_card(zoo.entry(name))
                    if card:
                        gr.Markdown(f"### {plain(name)}\n\n{card}", elem_id=f"card-{re.sub(r'[^a-z0-9]+', '-', name.lower())}")
            gr.Examples([[p] for p in heldout[:8]], inputs=[prompt], label="Held-out prompts (never seen in training)")
            gr.Examples([[p] for p in example_prompts(8)], inputs=[prompt], label="From the world's vocabulary")
            slots = []
            with gr.Row():
                for name in names:
                    with gr.Column(min_width=160):
                        slots += [gr.Video(label=name, visible=False, autoplay=True, loop=True, height=256), gr.Markdown(visible=False)]
            timing = gr.Dataframe(
                value=pd.DataFrame(columns=list(COMPARISON_COLUMNS)),
                elem_id="timings",
                label="Where the time goes: text encoding, denoising, decoding (ms); speedup = teacher end-to-end / model end-to-end",
                interactive=False,
            )
            files = gr.File(label="Download the mp4s", file_count="multiple", interactive=False)
            outputs = [*slots, timing, files]
            run.click(generate, [prompt, seed, models, fast], outputs, api_name="compare", concurrency_limit=1, concurrency_id="render")
            api_generate.click(
                generate_full, [prompt, seed, models], outputs, api_name="generate", concurrency_limit=1, concurrency_id="render"
            )

        with gr.Tab("Arena (blind rating)"):
            gr.Markdown(
                "Two models, the same prompt and seed, sides drawn at random. Rate, then see who was who. "
                "Leave the prompt empty for a held-out prompt (these count for the leaderboard). "
                "Some rounds are checks with an obvious answer; raters who fail them are not counted."
            )
            with gr.Row():
                own_prompt = gr.Textbox(
                    label="Your own prompt, optional: stored, not counted on the public board", scale=4, elem_id="own-prompt"
                )
                new_round = gr.Button("New round", variant="primary", scale=1, elem_id="new-round")
                skip = gr.Button("Skip", scale=1, elem_id="skip")
            battle_prompt = gr.Markdown("Press **New round** to start.", elem_id="battle-prompt")
            with gr.Row():
                video_a = gr.Video(label="A", elem_id="video-a", interactive=False, autoplay=True, loop=True, height=320)
                video_b = gr.Video(label="B", elem_id="video-b", interactive=False, autoplay=True, loop=True, height=320)
            questions = [
                Choice.named(ANSWER_CHOICES, f"The answer to '{CRITERION_NAMES[c]}'", label=CRITERION_QUESTIONS[c], elem_id=f"q-{c}")
                for c in CRITERIA
            ]
            with gr.Row():
                submit = gr.Button("Submit vote", variant="primary", interactive=False, elem_id="submit-vote")
                battle_id = gr.Textbox(label="Battle id", interactive=False, max_lines=1, elem_id="battle-id")
            result = gr.Markdown(elem_id="vote-result")
            arena_outputs = [battle_id, battle_prompt, video_a, video_b, *questions, result, submit]
            # show_progress hidden: a progress bar or timer would tell which side is the fast model.
            new_round.click(arena_new, [own_prompt], arena_outputs, api_name="arena_new", show_progress="hidden", concurrency_limit=4)
            skip.click(
                arena_skip, [battle_id, own_prompt], arena_outputs, api_name="arena_skip", show_progress="hidden", concurrency_limit=4
            )
            submit.click(arena_vote, [battle_id, *questions], [result, submit], api_name="arena_vote", concurrency_limit=8)

        with gr.Tab("Leaderboard") as board_tab:
            with gr.Row():
                criterion = Choice.named([(CRITERION_NAMES[c], c) for c in CRITERIA], "The criterion", value="overall", label="Criterion")
                refresh = gr.Button("Refresh", elem_id="refresh")
            summary = gr.Markdown(elem_id="board-summary")
            table = gr.Dataframe(
                value=pd.DataFrame(columns=BOARD_COLUMNS), label="Bradley-Terry scores", interactive=False, elem_id="board"
            )
            with gr.Row():
                heatmap = gr.Plot(label="Win-rate matrix", visible=False)
                bars = gr.Plot(label="Win / tie / lose per pair", visible=False)
            with gr.Row():
                export_button = gr.Button("Export counted votes", elem_id="export")
                csv_file = gr.File(label="votes.csv", interactive=False)
                jsonl_file = gr.File(label="votes.jsonl", interactive=False)
            with gr.Accordion("Admin: every stored vote", open=False):
                token = gr.Textbox(label=f"Admin token ({ENV_ADMIN_TOKEN})", type="password", max_lines=1, elem_id="admin-token")
                export_all_button = gr.Button("Export all votes", elem_id="export-all")
                full_csv = gr.File(label="votes.csv (all)", interactive=False)
                full_jsonl = gr.File(label="votes.jsonl (all)", interactive=False)
            board_outputs = [summary, table, heatmap, bars]
            refresh.click(leaderboard, [criterion], board_outputs, api_name="leaderboard", concurrency_limit=2)
            criterion.change(leaderboard, [criterion], board_outputs, api_visibility="private", concurrency_limit=2)
            board_tab.select(leaderboard, [criterion], board_outputs, api_visibility="private", concurrency_limit=2)
            export_button.click(export, None, [csv_file, jsonl_file], api_name="export", concurrency_limit=2)
            export_all_button.click(export_all, [token], [full_csv, full_jsonl], api_name="export_all", concurrency_limit=1)
    return demo


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def video_size(text: str) -> tuple[int, int, int]:
    """argparse type for --size: 'HxWxF', e.g. 480x832x33."""
    try:
        height, width, frames = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be HEIGHTxWIDTHxFRAMES, e.g. 480x832x33; got {text!r}") from None
    if min(height, width, frames) < 1:
        raise argparse.ArgumentTypeError(f"must be positive numbers, got {text!r}")
    return height, width, frames


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DOLLAR demo and human evaluation (Gradio).")
    on_space = bool(os.environ.get("SPACE_ID"))
    p.add_argument("--model", action="append", default=[], help="extra pipeline folder or hub id (repeatable)")
    p.add_argument("--models", default=None, help="comma-separated subset of the model names to offer (default: all available)")
    p.add_argument(
        "--size",
        type=video_size,
        default=None,
        help="HxWxF: height, width and frames of the --model videos (default: each checkpoint's own)",
    )
    p.add_argument("--pool", default=None, help="folder of pre-rendered battles (default: <data dir>/pool when it exists)")
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: $DOLLAR_DB_URL, else SQLite in the data directory)")
    p.add_argument("--data-dir", default=None, help="where votes live (default: $DOLLAR_DATA_DIR, /data, ./data)")
    p.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space else "127.0.0.1"),
        help="address to listen on (default 127.0.0.1; 0.0.0.0 on a Hugging Face Space)",
    )
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--queue-size", type=int, default=100, help="requests waiting beyond this are turned away with a 'busy' message")
    p.add_argument(
        "--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1), help="torch CPU threads for rendering"
    )
    p.add_argument("--battle-ttl", type=float, default=_env_float("DOLLAR_BATTLE_TTL_S", 1800), help="seconds a battle takes votes")
    limits = RaterLimits()
    p.add_argument(
        "--min-view-s",
        type=float,
        default=_env_float("DOLLAR_MIN_VIEW_S", limits.min_view_s),
        help="a vote counts this long after the videos were served",
    )
    p.add_argument(
        "--battles-per-minute",
        type=int,
        default=int(_env_float("DOLLAR_BATTLES_PER_MINUTE", limits.battles_per_minute)),
        help="per client address; 0 = no limit",
    )
    p.add_argument(
        "--votes-per-day",
        type=int,
        default=int(_env_float("DOLLAR_VOTES_PER_DAY", limits.votes_per_day)),
        help="per client address; 0 = no limit",
    )
    p.add_argument(
        "--check-rate",
        type=float,
        default=_env_float("DOLLAR_CHECK_RATE", DEFAULT_CHECK_RATE),
        help="share of rounds that are check battles",
    )
    p.add_argument(
        "--round-floor-s",
        type=float,
        default=_env_float("DOLLAR_ROUND_FLOOR_S", DEFAULT_ROUND_FLOOR_S),
        help="every round answers after a multiple of this (set it above the slowest live battle's render time)",
    )
    p.add_argument(
        "--min-raters",
        type=int,
        default=int(_env_float("DOLLAR_MIN_RATERS", DEFAULT_MIN_RATERS)),
        help="the board ranks once this many raters voted",
    )
    p.add_argument(
        "--pairing",
        choices=ranking.PAIRING_RULES,
        default=os.environ.get("DOLLAR_PAIRING") or "active",
        help="how the next battle's pair is chosen: active (the pair whose order the counted votes leave least certain) "
        "or least_compared (balanced)",
    )
    p.add_argument(
        "--trust-proxy",
        action=argparse.BooleanOptionalAction,
        default=on_space,
        help="take the rater's address from X-Forwarded-For (on by default on a Space, which sits behind a proxy)",
    )
    return p


def _video_folder() -> str:
    """This process's folder for videos and exports, removed at exit; folders left by processes
    that no longer run (killed) are removed first."""
    root = tempfile.gettempdir()
    for stale in glob.glob(os.path.join(root, "dollar-app-*-*")):
        pid = os.path.basename(stale).split("-")[2]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    folder = tempfile.mkdtemp(prefix=f"dollar-app-{os.getpid()}-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def create_app(argv: list[str] | None = None) -> tuple[gr.Blocks, dict]:
    """The app from command-line arguments, queued, and the keyword arguments for ``launch``.
    A problem with the data folder, the database, --model or --pool raises ValueError with one sentence."""
    args = build_parser().parse_args(argv)

    torch.set_num_threads(max(1, args.threads))  # one render at a time uses every core
    data_dir = os.path.abspath(args.data_dir or default_data_dir())
    if not args.db and not os.environ.get("DOLLAR_DB_URL"):
        try:
            os.makedirs(data_dir, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"The data folder {data_dir} cannot be created ({err.strerror}); pass --data-dir (or set DOLLAR_DATA_DIR) to a writable folder."
            ) from None
    db_url = args.db or os.environ.get("DOLLAR_DB_URL") or f"sqlite:///{os.path.join(data_dir, 'votes.sqlite')}"
    limits = RaterLimits(args.min_view_s, args.battles_per_minute, args.votes_per_day)
    store = VoteStore(
        db_url, battle_ttl_s=args.battle_ttl, app_version=dollar.__version__, mirror=HubMirror.from_env(data_dir), limits=limits
    )
    work = _video_folder()
    zoo = ModelZoo(select_models(available_models(args.model, args.size), args.models), os.path.join(work, "videos"), progress_bars=True)
    pool_dir = args.pool or os.path.join(data_dir, "pool")
    pool = BattlePool(pool_dir, zoo.names) if (args.pool or os.path.exists(os.path.join(pool_dir, "pool.jsonl"))) else None
    arena = Arena(
        store,
        zoo,
        pool,
        round_floor_s=args.round_floor_s,
        check_rate=args.check_rate,
        served_dir=os.path.join(work, "served"),
        pairing=args.pairing,
    )
    demo = build_app(
        zoo,
        arena,
        store,
        os.path.join(work, "exports"),
        min_raters=args.min_raters,
        trust_proxy=args.trust_proxy,
        admin_token=os.environ.get(ENV_ADMIN_TOKEN) or None,
    )
    demo.queue(max_size=args.queue_size, default_concurrency_limit=4)
    # show_error off: only the one-sentence gr.Error messages reach a client, never an exception's text.
    return demo, dict(server_name=args.host, server_port=args.port, show_error=False, max_file_size=MAX_UPLOAD)


if __name__ == "__main__":
    try:
        demo, launch_kwargs = create_app()
    except ValueError as err:  # a bad --model, --pool, --db or data folder: one sentence, no traceback
        raise SystemExit(f"error: {err}") from None
    demo.launch(**launch_kwargs)
