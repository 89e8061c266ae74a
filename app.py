"""DOLLAR demo and human evaluation: generate & compare, blind arena, leaderboard.

python app.py                          # bundled models from assets/, votes in ./data (or $DOLLAR_DATA_DIR, /data on a Space)
python app.py --model runs/student-4   # add a pipeline folder or hub id (repeatable)
python app.py --pool data/pool         # serve battles rendered ahead (python -m dollar.arena build-pool)
DOLLAR_DB_URL=postgresql+psycopg://... python app.py   # several replicas share one database

Thin: the logic lives in dollar.arena (models, rendering, battles), dollar.votes (the store)
and dollar.ranking (Bradley-Terry); this file only lays out the page and maps errors.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import gradio as gr
import pandas as pd
import torch

import dollar
from dollar import ranking, world
from dollar.arena import Arena, BattlePool, ModelZoo, available_models, comparison_table, example_prompts
from dollar.votes import ANSWER_LABELS, CRITERIA, CRITERION_QUESTIONS, HubMirror, VoteStore, default_data_dir

CRITERION_NAMES = {"visual_quality": "Visual quality", "text_alignment": "Text-video alignment", "motion": "Motion", "overall": "Overall"}
ANSWER_CHOICES = [(label, value) for value, label in ANSWER_LABELS.items()]


def user_error(err) -> gr.Error:
    """A mistake the user can fix: shown in the page and returned by the API, not logged as a crash."""
    return gr.Error(str(err), print_exception=False)


def build_app(
    zoo: ModelZoo, arena: Arena, store: VoteStore, export_dir: str, bootstrap_rounds: int = 1000, min_votes: int = 30
) -> gr.Blocks:
    names = zoo.names
    heldout = [p.prompt for p in world.heldout_prompts(64)]

    def generate(prompt, seed, models, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (gradio injects it by default value)
        try:
            progress(0, desc="Rendering (the 50-step teacher takes longest)")
            gens = zoo.compare(prompt, seed, models or [])
        except ValueError as err:
            raise user_error(err) from None
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
            caption = (
                f"**{name}**: {row['NFE']} NFE, denoise {row['denoising (s)']:.3f} s, decode {row['decoding (s)']:.3f} s, "
                f"end to end {row['end to end (s)']:.3f} s{speed}"
            )
            updates += [gr.Video(value=g.video_path, visible=True, label=name), gr.Markdown(caption, visible=True)]
        return [*updates, table, [g.video_path for g in gens]]

    def arena_new(user_prompt, request: gr.Request):
        try:
            view = arena.new_battle(request.session_hash, user_prompt)
        except ValueError as err:
            raise user_error(err) from None
        origin = "your prompt (stored, not counted on the public board)" if (user_prompt or "").strip() else "a held-out prompt"
        return (
            view.battle_id,
            f"**Prompt** ({origin}): {view.prompt}",
            view.video_a,
            view.video_b,
            *[None] * len(CRITERIA),
            "Answer the four questions, then press **Submit vote**.",
            gr.Button(interactive=True),
        )

    def arena_vote(battle_id, q1, q2, q3, q4, request: gr.Request):
        try:
            vote = arena.vote((battle_id or "").strip(), request.session_hash, dict(zip(CRITERIA, (q1, q2, q3, q4))))
        except ValueError as err:
            raise user_error(err) from None
        return f"Thanks, vote stored. **A** was **{vote['model_a']}**, **B** was **{vote['model_b']}**. Press **New round**.", gr.Button(
            interactive=False
        )

    def arena_skip(battle_id, user_prompt, request: gr.Request):
        if (battle_id or "").strip():
            try:
                arena.skip(battle_id.strip(), request.session_hash)
            except ValueError:
                pass  # an already voted / expired battle needs no skipping; a new round follows anyway
        return arena_new(user_prompt, request)

    def leaderboard(criterion):
        if criterion not in CRITERIA:
            raise user_error(f"Unknown criterion {str(criterion)[:40]!r}; choose one of {', '.join(CRITERIA)}.")
        votes = ranking.board_votes(store.votes_dataframe())
        table = ranking.leaderboard(votes, criterion, rounds=bootstrap_rounds, min_votes=min_votes)
        order = list(table["model"])
        title = CRITERION_NAMES[criterion]
        heat = ranking.plot_win_rate_heatmap(ranking.win_rate_matrix(votes, criterion, order), f"{title}: win rate (row vs column)")
        bars = ranking.plot_pair_outcomes(ranking.pair_outcomes(votes, criterion, order), f"{title}: win / tie / lose per pair")
        total = store.count_votes()
        summary = (
            f"{len(votes)} votes count for the board ({total - len(votes)} more on users' own prompts are stored but not counted). "
            f"Scores: Bradley-Terry on the Elo scale, 95% intervals from {bootstrap_rounds} bootstrap rounds, ties and 'both bad' count half; "
            f"models sharing a rank have overlapping intervals; 'preliminary' = fewer than {min_votes} votes."
        )
        return summary, table, heat, bars

    def export():
        csv_path = store.export_csv(os.path.join(export_dir, "votes.csv"))
        jsonl_path = store.export_jsonl(os.path.join(export_dir, "votes.jsonl"))
        return csv_path, jsonl_path

    with gr.Blocks(title="DOLLAR: few-step video generation") as demo:
        gr.Markdown(
            "# DOLLAR: few-step text-to-video\n"
            "A 50-step teacher, its few-step DDIM baselines and the distilled students (when trained), side by side; "
            "a blind arena for human ratings; and the leaderboard those ratings give."
        )
        with gr.Tab("Generate & compare"):
            with gr.Row():
                with gr.Column(scale=3):
                    prompt = gr.Textbox(label="Prompt", elem_id="prompt", value=heldout[0], lines=2, max_lines=4)
                    models = gr.CheckboxGroup(names, value=names, label="Models (same prompt, same seed)", elem_id="models")
                with gr.Column(scale=1):
                    seed = gr.Number(label="Seed", value=0, precision=0, elem_id="seed")
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
            gr.Examples([[p] for p in heldout[:8]], inputs=[prompt], label="Held-out prompts (never seen in training)")
            gr.Examples([[p] for p in example_prompts(8)], inputs=[prompt], label="From the world's vocabulary")
            slots = []
            with gr.Row():
                for name in names:
                    with gr.Column(min_width=160):
                        slots += [gr.Video(label=name, visible=False, autoplay=True, loop=True, height=256), gr.Markdown(visible=False)]
            timing = gr.Dataframe(
                elem_id="timings", label="Timings (seconds; speedup = teacher end-to-end / model end-to-end)", interactive=False
            )
            files = gr.File(label="Download the mp4s", file_count="multiple", interactive=False)
            run.click(
                generate, [prompt, seed, models], [*slots, timing, files], api_name="generate", concurrency_limit=1, concurrency_id="render"
            )

        with gr.Tab("Arena (blind rating)"):
            gr.Markdown(
                "Two models, the same prompt and seed, sides drawn at random. Rate, then see who was who. "
                "Leave the prompt empty for a held-out prompt (these count for the leaderboard)."
            )
            with gr.Row():
                own_prompt = gr.Textbox(
                    label="Your own prompt (optional; stored but not counted on the public board)", scale=4, elem_id="own-prompt"
                )
                new_round = gr.Button("New round", variant="primary", scale=1, elem_id="new-round")
                skip = gr.Button("Skip", scale=1, elem_id="skip")
            battle_prompt = gr.Markdown("Press **New round** to start.", elem_id="battle-prompt")
            with gr.Row():
                video_a = gr.Video(label="A", elem_id="video-a", interactive=False, autoplay=True, loop=True, height=320)
                video_b = gr.Video(label="B", elem_id="video-b", interactive=False, autoplay=True, loop=True, height=320)
            questions = [gr.Radio(ANSWER_CHOICES, label=CRITERION_QUESTIONS[c], elem_id=f"q-{c}") for c in CRITERIA]
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
                criterion = gr.Radio([(CRITERION_NAMES[c], c) for c in CRITERIA], value="overall", label="Criterion")
                refresh = gr.Button("Refresh", elem_id="refresh")
            summary = gr.Markdown(elem_id="board-summary")
            table = gr.Dataframe(label="Bradley-Terry scores", interactive=False, elem_id="board")
            with gr.Row():
                heatmap = gr.Plot(label="Win-rate matrix")
                bars = gr.Plot(label="Win / tie / lose per pair")
            with gr.Row():
                export_button = gr.Button("Export all votes", elem_id="export")
                csv_file = gr.File(label="votes.csv", interactive=False)
                jsonl_file = gr.File(label="votes.jsonl", interactive=False)
            board_outputs = [summary, table, heatmap, bars]
            refresh.click(leaderboard, [criterion], board_outputs, api_name="leaderboard", concurrency_limit=2)
            criterion.change(leaderboard, [criterion], board_outputs, api_visibility="private", concurrency_limit=2)
            board_tab.select(leaderboard, [criterion], board_outputs, api_visibility="private", concurrency_limit=2)
            export_button.click(export, None, [csv_file, jsonl_file], api_name="export", concurrency_limit=2)
    return demo


def create_app(argv: list[str] | None = None) -> tuple[gr.Blocks, dict]:
    """The app from command-line arguments, queued, and the keyword arguments for ``launch``."""
    p = argparse.ArgumentParser(description="DOLLAR demo and human evaluation (Gradio).")
    p.add_argument("--model", action="append", default=[], help="extra pipeline folder or hub id (repeatable)")
    p.add_argument("--pool", default=None, help="folder of pre-rendered battles (default: <data dir>/pool when it exists)")
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: $DOLLAR_DB_URL, else SQLite in the data directory)")
    p.add_argument("--data-dir", default=None, help="where votes, videos and exports live (default: $DOLLAR_DATA_DIR, /data, ./data)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--queue-size", type=int, default=100, help="requests waiting beyond this are turned away with a 'busy' message")
    p.add_argument(
        "--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1), help="torch CPU threads for rendering"
    )
    p.add_argument(
        "--battle-ttl", type=float, default=float(os.environ.get("DOLLAR_BATTLE_TTL_S", 1800)), help="seconds a battle takes votes"
    )
    args = p.parse_args(argv)

    torch.set_num_threads(max(1, args.threads))  # one render at a time uses every core
    data_dir = args.data_dir or default_data_dir()
    os.makedirs(data_dir, exist_ok=True)
    db_url = args.db or os.environ.get("DOLLAR_DB_URL") or f"sqlite:///{os.path.join(data_dir, 'votes.sqlite')}"
    store = VoteStore(db_url, battle_ttl_s=args.battle_ttl, app_version=dollar.__version__, mirror=HubMirror.from_env(data_dir))
    video_dir = tempfile.mkdtemp(prefix="dollar-videos-")
    zoo = ModelZoo(available_models(args.model), video_dir, progress_bars=True)
    pool_dir = args.pool or os.path.join(data_dir, "pool")
    pool = BattlePool(pool_dir, zoo.names) if (args.pool or os.path.exists(os.path.join(pool_dir, "pool.jsonl"))) else None
    export_dir = tempfile.mkdtemp(prefix="dollar-export-")
    demo = build_app(zoo, Arena(store, zoo, pool), store, export_dir)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=4)
    allowed = [video_dir, export_dir] + ([pool.folder] if pool else [])
    return demo, dict(server_name=args.host, server_port=args.port, allowed_paths=allowed, show_error=True)


if __name__ == "__main__":
    try:
        demo, launch_kwargs = create_app()
    except ValueError as err:  # a bad --model, --pool or --db: one sentence, no traceback
        raise SystemExit(f"error: {err}") from None
    demo.launch(**launch_kwargs)
