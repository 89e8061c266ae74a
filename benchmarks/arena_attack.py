"""Attack the arena as a client would (issue #15), against the real app (``python app.py``) on
this machine, and write what each attack gets now to benchmarks/results/arena_attack.json.

python benchmarks/arena_attack.py                      # ~5 minutes on 2 CPU cores
python benchmarks/arena_attack.py --rounds 20 --votes 200 --attack-seconds 30   # a quicker run

Two apps are served, each ``python app.py`` in its own process, on one pool of battles rendered first:
- "blind": the deployed blindness (padded per-battle copies, the round floor, check rounds) with
  the per-address limits off, so one client can gather ``--rounds`` battles quickly. The client
  hops sessions, votes "tie", reads every reveal and keeps every fingerprint of what it received
  (URL, file name, bytes, size, the mp4 without its padding), then tries to name the models from
  what it receives: repeats of a fingerprint, the smaller file, the slower answer. Binomial tests
  (scipy) say whether any guess beats chance.
- "limits": every default (the limits on; the address it listens on is reported). A board of
  honest votes, simulated from fixed Bradley-Terry strengths and stored under 40 rater keys,
  stands before the attack; one client then sends up to ``--votes`` vote attempts (bounded by
  ``--attack-seconds``; 8 threads, a new session every 5 rounds) as a worst-case attacker that
  knows every identity (read from the server's database, as if blindness had failed) and votes for
  the weaker model. The board is read through the API before and after; the same ranking is also
  computed offline with the daily cap's worth of such votes, and with all of them counted (no
  limits), for comparison.
Then the public export, direct file reads, an oversized upload and the bad inputs of the issue.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dollar.local_servers import gradio_call, listening_address, served_app  # noqa: E402

APP = os.path.join(ROOT, "app.py")

# Simulated honest preferences (log-odds units): the order the bundled models' cards suggest.
HONEST_STRENGTHS = {
    "teacher": 1.2,
    "student-4": 0.9,
    "student-2": 0.4,
    "teacher DDIM-4": 0.0,
    "student-1": -0.5,
    "teacher DDIM-2": -0.9,
    "teacher DDIM-1": -1.4,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--rounds", type=int, default=40, help="battles the blindness client takes")
    p.add_argument("--votes", type=int, default=1000, help="vote attempts of the flooding client")
    p.add_argument("--attack-seconds", type=float, default=60.0, help="wall-clock bound of the flood")
    p.add_argument("--pool-rounds", type=int, default=21, help="battles rendered ahead (every pair of the seven models once)")
    p.add_argument("--honest-raters", type=int, default=40)
    p.add_argument("--honest-votes", type=int, default=25, help="per honest rater")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "arena_attack.json"))
    return p


def mp4_without_free_boxes(data: bytes) -> bytes:
    """The mp4's top-level boxes other than ``free``/``skip``: what identifies the video itself."""
    out, i = [], 0
    while i + 8 <= len(data):
        size, kind = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8]
        if size < 8:
            break
        if kind not in (b"free", b"skip"):
            out.append(data[i : i + size])
        i += size
    return b"".join(out)


def fingerprints(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    return {
        "url": path,
        "name": os.path.basename(path),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "video": hashlib.sha256(mp4_without_free_boxes(data)).hexdigest(),
    }


def binomial(k: int, n: int, p: float) -> dict:
    from scipy.stats import binomtest

    if n == 0:
        return {"correct": 0, "n": 0}
    test = binomtest(k, n, p, alternative="greater")
    return {"correct": k, "n": n, "accuracy": round(k / n, 3), "chance": round(p, 3), "p_value": round(float(test.pvalue), 4)}


def blindness_attack(url: str, store, rounds: int) -> dict:
    """One client, a new session every 5 rounds, votes 'tie' to read each reveal."""
    from gradio_client import Client

    seen: dict[str, dict[str, str]] = {k: {} for k in ("url", "name", "sha256", "video")}
    repeats = {k: 0 for k in seen}
    rows = []
    client = None
    for r in range(rounds):
        if r % 5 == 0:
            client = Client(url, verbose=False)
        t0 = time.perf_counter()
        battle_id, _, video_a, video_b, *_ = client.predict("", api_name="/arena_new")
        elapsed = time.perf_counter() - t0
        prints = [fingerprints(video_a), fingerprints(video_b)]
        for fp in prints:
            for k in seen:
                repeats[k] += fp[k] in seen[k]
        client.predict(battle_id, "tie", "tie", "tie", "tie", api_name="/arena_vote")
        battle = store.get_battle(battle_id)  # the truth, to score the guesses (the reveal says the same)
        for fp, model in zip(prints, (battle.model_a, battle.model_b)):
            for k in seen:
                seen[k][fp[k]] = model
        rows.append(
            dict(
                a=battle.model_a,
                b=battle.model_b,
                pool=battle.pool_item is not None,
                check=battle.check_side is not None,
                size_a=prints[0]["size"],
                size_b=prints[1]["size"],
                elapsed=elapsed,
            )
        )
    rng = random.Random(0)
    # Guess 1 (issue item 2): in battles with the teacher, the teacher's file is the smaller one.
    with_teacher = [r for r in rows if "teacher" in (r["a"], r["b"]) and not r["check"]]
    right = 0
    for r in with_teacher:
        guess = "a" if r["size_a"] < r["size_b"] else "b" if r["size_b"] < r["size_a"] else rng.choice("ab")
        right += r[guess] == "teacher"
    # Guess 2: a live battle with the teacher answers later (threshold: the median time of the first half).
    live = [r for r in rows if not r["pool"] and not r["check"]]
    half = max(1, len(live) // 2)
    threshold = sorted(r["elapsed"] for r in live[:half])[half // 2] if live else 0.0
    test = live[half:]
    has_teacher = [("teacher" in (r["a"], r["b"])) for r in test]
    base = sum(has_teacher) / len(test) if test else 0.5
    timing_right = sum((r["elapsed"] > threshold) == t for r, t in zip(test, has_teacher))
    sizes = sorted({r["size_a"] for r in rows} | {r["size_b"] for r in rows})
    return {
        "rounds": len(rows),
        "pool_rounds": sum(r["pool"] for r in rows),
        "live_rounds": sum(not r["pool"] for r in rows),
        "check_rounds": sum(r["check"] for r in rows),
        "fingerprint_repeats": repeats,
        "distinct_file_sizes": sizes,
        "guess_teacher_side_by_smaller_file": binomial(right, len(with_teacher), 0.5),
        "guess_teacher_present_by_time": {
            **binomial(timing_right, len(test), max(base, 1 - base)),
            "threshold_s": round(threshold, 3),
            "note": "chance = always guessing the more common class",
        },
        "answer_time_s": {
            "live_with_teacher": [round(r["elapsed"], 2) for r in live if "teacher" in (r["a"], r["b"])],
            "live_without_teacher": [round(r["elapsed"], 2) for r in live if "teacher" not in (r["a"], r["b"])],
            "pool": [round(r["elapsed"], 2) for r in rows if r["pool"]],
        },
    }


def seed_honest_board(store, raters: int, votes_each: int, seed: int = 0) -> None:
    """Honest votes drawn from HONEST_STRENGTHS (Bradley-Terry, 10% ties), one rater key each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    models = list(HONEST_STRENGTHS)
    for r in range(raters):
        key = f"honest-{r:03d}"
        for _ in range(votes_each):
            i, j = rng.choice(len(models), 2, replace=False)
            p = 1 / (1 + np.exp(-(HONEST_STRENGTHS[models[i]] - HONEST_STRENGTHS[models[j]])))
            answer = "tie" if rng.random() < 0.1 else ("A" if rng.random() < p else "B")
            battle = store.create_battle(f"{key}-session", "held-out", "heldout", 0, models[i], models[j], False, client_key=key)
            store.mark_shown(battle.id, "", "")
            store.record_vote(battle.id, f"{key}-session", dict.fromkeys(("visual_quality", "text_alignment", "motion", "overall"), answer))


def oracle_answer(battle) -> str:
    """Worst case: the attacker knows both identities; it passes checks and backs the weaker model."""
    if battle.check_side:
        return battle.check_side
    return "A" if HONEST_STRENGTHS.get(battle.model_a, 0) < HONEST_STRENGTHS.get(battle.model_b, 0) else "B"


def flood(url: str, store, attempts: int, seconds: float, min_view_s: float) -> dict:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    lock = threading.Lock()
    left = [attempts]
    stats = {"attempts": 0, "votes_stored": 0, "refused": {}}
    deadline = time.time() + seconds

    def refuse(err: Exception) -> None:
        reason = str(err).split(";")[0][:90]
        with lock:
            stats["refused"][reason] = stats["refused"].get(reason, 0) + 1

    def worker(i: int) -> None:
        client, n = None, 0
        while time.time() < deadline:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
                stats["attempts"] += 1
            if n % 5 == 0:
                client = Client(url, verbose=False)
            n += 1
            try:
                battle_id, *_ = client.predict("", api_name="/arena_new")
            except AppError as err:
                refuse(err)
                time.sleep(0.05)
                continue
            time.sleep(min_view_s)
            answer = oracle_answer(store.get_battle(battle_id))
            try:
                client.predict(battle_id, answer, answer, answer, answer, api_name="/arena_vote")
                with lock:
                    stats["votes_stored"] += 1
            except AppError as err:
                refuse(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats["wall_s"] = round(time.perf_counter() - start, 1)
    return stats


def board_from_api(client) -> dict:
    summary, table, *_ = client.predict("overall", api_name="/leaderboard")
    rows = [dict(zip(table["headers"], r)) for r in table["data"]]
    return {"summary": summary, "rows": {r["model"]: r for r in rows}}


def shift(before: dict, after: dict) -> dict:
    """Per model: how far the score moved, against half the width of its 95% interval before."""
    out = {}
    for model, b in before.items():
        a = after[model]
        out[model] = {
            "before": b["score"],
            "after": a["score"],
            "moved": round(abs(a["score"] - b["score"]), 1),
            "half_interval": round((b["ci_high"] - b["ci_low"]) / 2, 1),
        }
    return {"models": out, "within_interval": all(m["moved"] < m["half_interval"] for m in out.values())}


def offline_board(votes, extra: int, key: str = "attacker") -> dict:
    """The board with ``extra`` oracle votes from one rater added to ``votes`` (no limits)."""
    import numpy as np
    import pandas as pd

    from dollar import ranking

    rng = np.random.default_rng(1)
    models = list(HONEST_STRENGTHS)
    rows = []
    for _ in range(extra):
        i, j = rng.choice(len(models), 2, replace=False)
        a, b = models[i], models[j]
        answer = "A" if HONEST_STRENGTHS[a] < HONEST_STRENGTHS[b] else "B"
        rows.append(dict(model_a=a, model_b=b, overall=answer, counts_for_board=True, rater=key))
    both = pd.concat([votes[["model_a", "model_b", "overall", "counts_for_board", "rater"]], pd.DataFrame(rows)], ignore_index=True)
    table = ranking.leaderboard(both, "overall", rounds=1000)
    return {r["model"]: r for r in table.to_dict("records")}


def http_status(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from dollar.arena import ModelZoo, available_models, build_pool
    from dollar.votes import PUBLIC_COLUMNS, RaterLimits, VoteStore

    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="arena-attack-")
    pool_dir = os.path.join(work, "pool")
    zoo = ModelZoo(available_models(), os.path.join(work, "render"))
    start = time.perf_counter()
    build_pool(pool_dir, args.pool_rounds, zoo, log=lambda _: None)
    result: dict = {"pool": {"battles": args.pool_rounds, "models": zoo.names, "render_s": round(time.perf_counter() - start, 1)}}
    common = ["--pool", pool_dir, "--threads", str(args.threads)]
    on_space = bool(os.environ.get("SPACE_ID"))

    # 1-2. Blindness: the deployed serving, the limits off so that one client gathers enough rounds.
    blind_dir = os.path.join(work, "blind")
    blind = [*common, "--host", "127.0.0.1", "--data-dir", blind_dir, *"--min-view-s 0 --battles-per-minute 0 --votes-per-day 0".split()]
    with served_app(APP, blind, os.path.join(work, "blind.log")) as (url, _, _):
        store = VoteStore(f"sqlite:///{os.path.join(blind_dir, 'votes.sqlite')}")
        result["blindness"] = blindness_attack(url, store, args.rounds)

    # 3. Flood: every default (on a Space, where the default is 0.0.0.0, loopback); an honest board first.
    limits = RaterLimits()
    limit_dir = os.path.join(work, "limits")
    os.environ["DOLLAR_ADMIN_TOKEN"] = token = hashlib.sha256(os.urandom(16)).hexdigest()
    limits_argv = [*common, "--data-dir", limit_dir, *(["--host", "127.0.0.1"] if on_space else [])]
    with served_app(APP, limits_argv, os.path.join(work, "limits.log")) as (url, port, pid):
        store = VoteStore(f"sqlite:///{os.path.join(limit_dir, 'votes.sqlite')}")
        seed_honest_board(store, args.honest_raters, args.honest_votes)
        honest = store.board_votes()
        client = Client(url, verbose=False)
        before = board_from_api(client)
        flood_stats = flood(url, store, args.votes, args.attack_seconds, limits.min_view_s + 0.2)
        after = board_from_api(client)
        result["flood"] = {
            "limits": limits.__dict__,
            "honest_board": {"votes": len(honest), "raters": args.honest_raters, "strengths": HONEST_STRENGTHS},
            **flood_stats,
            "board_through_api": shift(before["rows"], after["rows"]),
            "worst_day_offline": {
                "note": f"the same board with one rater's {limits.votes_per_day} oracle votes (the daily cap) counted",
                **shift(offline_board(honest, 0), offline_board(honest, limits.votes_per_day)),
            },
            "no_limits_offline": {
                "note": f"the same board with all {args.votes} oracle votes counted (what the limits prevent)",
                **shift(offline_board(honest, 0), offline_board(honest, args.votes)),
            },
        }

        # 4. Exports: a private prompt and session stay private; the full export needs the token.
        battle = store.create_battle("victim-session", "my private prompt", "user", 0, "teacher", "student-4", False, client_key="victim")
        store.mark_shown(battle.id, "", "")
        store.record_vote(battle.id, "victim-session", dict.fromkeys(("visual_quality", "text_alignment", "motion", "overall"), "A"))
        csv_path, jsonl_path = client.predict(api_name="/export")
        with open(jsonl_path) as f:
            public_rows = [json.loads(line) for line in f]
        text = open(csv_path).read() + open(jsonl_path).read()
        private = ("session_hash", "client_key", "battle_id", "seed", "time_to_vote_s", "rater")
        try:
            client.predict("wrong", api_name="/export_all")
            wrong_token = "served"
        except AppError as err:
            wrong_token = str(err)
        full_csv, _ = client.predict(token, api_name="/export_all")
        result["export"] = {
            "public_rows": len(public_rows),
            "public_columns": list(public_rows[0]) if public_rows else list(PUBLIC_COLUMNS),
            "private_fields_in_public_export": sorted(f for f in private if any(f in r for r in public_rows)),
            "private_prompt_in_public_export": "my private prompt" in text,
            "victim_session_in_public_export": "victim-session" in text,
            "wrong_admin_token": wrong_token,
            "full_export_with_token_has_private_prompt": "my private prompt" in open(full_csv).read(),
        }

        # 5. Files the app must not serve, and an upload it must not take.
        files = {
            "pool manifest": os.path.join(pool_dir, "pool.jsonl"),
            "vote database": os.path.join(limit_dir, "votes.sqlite"),
            "traversal": "../../../../etc/passwd",
        }
        boundary = "x" * 16
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n\r\n').encode()
        body += os.urandom(200_000) + f"\r\n--{boundary}--\r\n".encode()
        result["server"] = {
            "file_reads": {name: http_status(f"{url}gradio_api/file={path}") for name, path in files.items()},
            "upload_200kb_status": http_status(
                f"{url}gradio_api/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            ),
            "listens_on": listening_address(pid, port) if not on_space else "(on a Space)",
        }

        # 6. Bad input: one sentence each.
        cases = [
            ((1.5,), "seed 1.5"),
            ((True,), "seed True"),
            (("abc",), "seed 'abc'"),
            ((-1,), "seed -1"),
            ((None,), "seed None"),
        ]
        answers = {}
        prompt = "a red circle moving left on a black background"
        for (seed,), name in cases:
            answers[name] = _error(client, prompt, seed, ["teacher DDIM-1"], api_name="/generate")
        for models, name in ((None, "models None"), ("teacher", "models as a string"), (["student-9"], "unknown model")):
            answers[name] = _error(client, prompt, 3, models, api_name="/generate")
        for literal in ("NaN", "Infinity", "-Infinity"):
            answers[f"seed {literal} (raw HTTP)"] = _raw_error(port, f'{{"data": ["{prompt}", {literal}, ["teacher DDIM-1"]]}}')
        answers["criterion 'speed'"] = _error(client, "speed", api_name="/leaderboard")
        answers["answer 'C'"] = _error(client, "x", "A", "C", "A", "A", api_name="/arena_vote")
        one = {k: v for k, v in answers.items() if v and "\n" not in v and v.endswith(".") and "Could not" not in v}
        result["bad_input"] = {"answers": answers, "one_sentence": f"{len(one)}/{len(answers)}"}
    del os.environ["DOLLAR_ADMIN_TOKEN"]

    b = result["blindness"]
    result["ok"] = bool(
        sum(b["fingerprint_repeats"].values()) == 0
        and len(b["distinct_file_sizes"]) == 1
        and b["guess_teacher_side_by_smaller_file"].get("p_value", 1) > 0.05
        and b["guess_teacher_present_by_time"].get("p_value", 1) > 0.05
        and result["flood"]["board_through_api"]["within_interval"]
        and result["flood"]["worst_day_offline"]["within_interval"]
        and not result["export"]["private_fields_in_public_export"]
        and not result["export"]["private_prompt_in_public_export"]
        and all(s in (403, 404) for s in result["server"]["file_reads"].values())
        and result["server"]["upload_200kb_status"] in (400, 413)
        and len(one) == len(answers)
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def _error(client, *args, api_name: str) -> str:
    from gradio_client.exceptions import AppError

    try:
        client.predict(*args, api_name=api_name)
    except AppError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 (reported as it came)
        return f"{type(err).__name__}: {err}"
    return ""


def _raw_error(port: int, body: str) -> str:
    _, data = gradio_call(port, "generate", body)
    return (json.loads(data) or {}).get("error") or ""


if __name__ == "__main__":
    sys.exit(main())
