"""The `demo` suite's data: preference pairs generated from templates, offline and seeded.

Each record asks how to do an everyday task (``Human: How do I bake bread?``). The chosen
response helps: it names steps of the task and closes politely. The rejected one does not:
it dismisses the question, or answers something else. A fair coin decides whether the chosen
response is the longer one (both are redrawn until they agree), so "prefer the longer
response" stays near chance.

Tasks are split in two disjoint halves: the source domain asks about the first half, the
target domain about the second, so no prompt appears in both. The suite then rewrites the
target files with ``dial data cipher`` (an unseen "language"): the preference concept is the
same, its representation is not.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from dial.data.io import write_records
from dial.errors import ConfigError

TASKS = (
    ("bake bread", ("mix flour, water, yeast and salt", "knead the dough", "bake it until golden")),
    ("fix a flat tire", ("remove the wheel", "find the hole", "patch the tube and inflate it")),
    ("plant tomatoes", ("pick a sunny spot", "dig a deep hole", "water the young plants daily")),
    ("learn to swim", ("practise floating", "kick from the hips", "breathe out under water")),
    ("paint a room", ("cover the floor", "tape the edges", "roll on two thin coats")),
    ("brew coffee", ("grind fresh beans", "heat the water", "pour it slowly over the grounds")),
    ("write a resume", ("list your recent jobs", "describe what you achieved", "keep it short")),
    ("clean a laptop keyboard", ("turn the laptop off", "shake out crumbs", "wipe the keys")),
    ("start running", ("buy good shoes", "run slowly at first", "rest between runs")),
    ("save money", ("track your spending", "set a monthly budget", "move savings first")),
    ("sleep better", ("keep a fixed bedtime", "dim the lights", "avoid coffee at night")),
    ("make pancakes", ("whisk eggs and milk", "stir in the flour", "fry them in butter")),
    ("tie a tie", ("cross the wide end over", "loop it through the neck", "pull the knot up")),
    (
        "change a light bulb",
        ("switch off the power", "let the old bulb cool", "screw in a new one"),
    ),
    ("study for an exam", ("plan your sessions", "test yourself often", "sleep before the exam")),
    ("wash a wool sweater", ("use cold water", "add gentle soap", "dry it flat on a towel")),
    ("set up a fish tank", ("rinse the gravel", "fill it with treated water", "add fish slowly")),
    ("prune a rose bush", ("use clean shears", "cut dead stems", "trim above an outward bud")),
    ("make a budget", ("add up your income", "list fixed costs", "set limits for the rest")),
    ("learn to juggle", ("start with one ball", "throw it in an arc", "add the second ball")),
    ("cook rice", ("rinse the rice", "use two cups of water per cup", "simmer it covered")),
    ("write a thank you note", ("name the gift", "say how you use it", "sign it warmly")),
    ("train a puppy to sit", ("hold a treat above its nose", "say sit", "reward it at once")),
    ("unclog a drain", ("pour hot water in", "use a plunger", "clean the trap below the sink")),
    ("make a paper plane", ("fold the sheet in half", "fold the corners in", "fold the wings")),
    ("repot a plant", ("water it the day before", "loosen the roots", "add fresh soil")),
    ("back up a phone", ("connect to wifi", "open the backup settings", "start the backup")),
    ("make iced tea", ("brew strong tea", "let it cool", "pour it over ice with lemon")),
    ("sharpen a knife", ("soak the whetstone", "hold a steady angle", "stroke each side evenly")),
    ("fold a fitted sheet", ("tuck the corners together", "lay it flat", "fold it in thirds")),
    ("make a campfire", ("clear a safe spot", "stack dry kindling", "light it from below")),
    ("write a short story", ("pick one character", "give them a problem", "end with a change")),
    ("clean windows", ("mix vinegar and water", "wipe from top to bottom", "dry with newspaper")),
    ("learn a new word daily", ("keep a notebook", "use the word in a sentence", "review weekly")),
    ("boil an egg", ("cover the egg with water", "boil it for nine minutes", "cool it in ice")),
    ("organise a closet", ("empty it fully", "donate what you never wear", "group by type")),
    ("make a smoothie", ("add fruit and yogurt", "pour in some milk", "blend until smooth")),
    ("care for a cactus", ("give it bright light", "water it rarely", "use sandy soil")),
    ("build a birdhouse", ("cut six wooden panels", "drill an entrance hole", "nail it together")),
    ("knit a scarf", ("cast on twenty stitches", "knit every row", "bind off at the end")),
)
ASKS = ("How do I {task}?", "Can you tell me how to {task}?", "What is the best way to {task}?")
OPENERS = ("Sure, here is how.", "Happy to help.", "Good question.", "Of course.")
STEP_FORMS = ("First, {a}.", "Then {b}.", "Finally, {c}.", "You should {a}, then {b}.")
CLOSERS = ("I hope this helps!", "Good luck with it.", "Let me know if you get stuck.")
DISMISSALS = (
    "I do not want to talk about that.",
    "Figure it out yourself.",
    "That is a boring question.",
    "Why would you even ask me that?",
    "Look it up somewhere else.",
    "I have better things to do.",
)
DETOURS = (
    "My favourite colour is blue.",
    "The weather was odd last week.",
    "Some people like trains a lot.",
    "I once read a long book about clouds.",
    "Cats sleep for most of the day.",
)


def _helpful(rng: random.Random, steps: tuple[str, str, str], sentences: int) -> str:
    parts = [rng.choice(OPENERS)]
    a, b, c = steps
    forms = rng.sample(STEP_FORMS, k=min(sentences, len(STEP_FORMS)))
    parts += [form.format(a=a, b=b, c=c) for form in forms[: max(sentences - 1, 1)]]
    if sentences > 1:
        parts.append(rng.choice(CLOSERS))
    return " ".join(parts)


def _unhelpful(rng: random.Random, sentences: int) -> str:
    pool = list(DISMISSALS) + list(DETOURS)
    return " ".join(rng.sample(pool, k=sentences))


def preference_pairs(tasks: list[int], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct preference records about the tasks with these indices of TASKS."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 50 * n:
            raise ConfigError(f"the templates give fewer than {n} distinct pairs for these tasks")
        task, steps = TASKS[rng.choice(tasks)]
        prompt = f"Human: {rng.choice(ASKS).format(task=task)}\n\nAssistant:"
        chosen_longer = rng.random() < 0.5
        while True:
            chosen = " " + _helpful(rng, steps, rng.randint(1, 3))
            rejected = " " + _unhelpful(rng, rng.randint(1, 3))
            if (len(chosen) > len(rejected)) == chosen_longer:
                break
        key = (prompt, chosen, rejected)
        if key in seen:
            continue
        seen.add(key)
        records.append({"prompt": prompt, "response_chosen": chosen, "response_rejected": rejected})
    return records


def generate(
    output_dir: str,
    source_train: int = 320,
    target_train: int = 320,
    target_test: int = 300,
    seed: int = 0,
) -> list[Path]:
    """Write ``source_train.jsonl`` (first half of the tasks), ``target_train.jsonl`` and
    ``target_test.jsonl`` (second half, disjoint records) into ``output_dir``."""
    half = len(TASKS) // 2
    source_tasks, target_tasks = list(range(half)), list(range(half, len(TASKS)))
    target = preference_pairs(target_tasks, target_train + target_test, seed + 1)
    files = {
        "source_train.jsonl": preference_pairs(source_tasks, source_train, seed),
        "target_train.jsonl": target[:target_train],
        "target_test.jsonl": target[target_train:],
    }
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, records in files.items():
        write_records(records, folder / name)
        written.append(folder / name)
    return written
