"""Regenerate choice-sample.jsonl and squad-sample.json from the small fact tables below.

Everything here was written for greenllm (see PROVENANCE.md). Run:
    python -m greenllm.data._build_samples
The output is deterministic (seeded), so the shipped files can be checked against it.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

OPPOSITES = [("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"),
             ("happy", "sad"), ("day", "night"), ("open", "closed"), ("wet", "dry"),
             ("light", "dark"), ("old", "young"), ("full", "empty"), ("hard", "soft"),
             ("early", "late"), ("high", "low"), ("left", "right"), ("win", "lose"),
             ("buy", "sell"), ("push", "pull"), ("inside", "outside"), ("rich", "poor"),
             ("strong", "weak"), ("thick", "thin"), ("loud", "quiet"), ("clean", "dirty"),
             ("first", "last"), ("begin", "end"), ("north", "south"),
             ("east", "west"), ("true", "false"), ("always", "never"), ("remember", "forget"),
             ("friend", "enemy"), ("question", "answer"), ("above", "below"),
             ("before", "after"), ("near", "far"), ("cheap", "expensive"), ("safe", "dangerous"),
             ("sweet", "sour")]

SEQUENCES = {
    "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "months": ["January", "February", "March", "April", "May", "June", "July", "August",
               "September", "October", "November", "December"],
    "numbers": ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"],
    "letters": list("ABCDEFGHIJKLMNOP"),
}

COMMONSENSE = [
    ("It was too dark to read, so she switched on the", "lamp", ["river", "sandwich", "cloud"]),
    ("He was thirsty, so he drank a glass of", "water", ["paper", "stone", "music"]),
    ("To cut the bread, she picked up a", "knife", ["pillow", "balloon", "feather"]),
    ("The plants were dry, so he gave them some", "water", ["shoes", "homework", "glue"]),
    ("It started to rain, so she opened her", "umbrella", ["oven", "dictionary", "wallet"]),
    ("He was tired after work, so he went to", "bed", ["the moon", "school", "the ocean floor"]),
    ("To write the letter, she needed a", "pen", ["horse", "bucket", "ladder"]),
    ("The baby was hungry, so its mother gave it some", "milk", ["nails", "sand", "ink"]),
    ("The ice cream melted because the day was very", "hot", ["cold", "quiet", "short"]),
    ("To unlock the door, he used his", "key", ["spoon", "hat", "sock"]),
    ("She brushed her teeth with a", "toothbrush", ["hammer", "carrot", "towel rail"]),
    ("The fire was put out by the", "firefighters", ["librarians", "bakers", "pilots"]),
    ("He wanted to see the stars, so he looked up at the", "sky", ["floor", "carpet", "table"]),
    ("We keep milk cold in the", "fridge", ["oven", "mailbox", "garden"]),
    ("The cake was baked in the", "oven", ["bathtub", "freezer", "drawer"]),
    ("Fish live in the", "water", ["desert", "attic", "chimney"]),
    ("Birds build their nests in", "trees", ["teacups", "engines", "rivers"]),
    ("The students listened carefully to their", "teacher", ["shoes", "soup", "windows"]),
    ("When the alarm rang in the morning, he woke", "up", ["down", "blue", "slowly sideways"]),
    ("She needed to cross the river, so she took the", "bridge", ["chimney", "spoon", "lamp"]),
    ("To see clearly, he put on his", "glasses", ["gloves", "boots", "scarf"]),
    ("The dog wagged its", "tail", ["wheels", "roof", "pages"]),
    ("He paid for the groceries with", "money", ["leaves", "water", "music"]),
    ("The doctor listened to her heart with a", "stethoscope", ["broom", "kettle", "kite"]),
    ("After the long race, the runners were", "tired", ["asleep for years", "made of glass",
                                                         "invisible"]),
    ("The farmer milked the", "cow", ["tractor", "fence", "barn door"]),
    ("Snow is usually", "white", ["green", "purple", "orange"]),
    ("To call his friend, he picked up his", "phone", ["shoe", "plate", "pillow"]),
    ("The library is full of", "books", ["cars", "fish", "clouds"]),
    ("She planted the seeds in the", "soil", ["ceiling", "television", "sky"]),
    ("The pilot flew the", "plane", ["house", "mountain", "river"]),
    ("He put on a warm coat because it was", "cold", ["hot", "loud", "sweet"]),
    ("The chef cooked dinner in the", "kitchen", ["garage", "bathroom", "attic"]),
    ("To dry her hands, she used a", "towel", ["stone", "candle", "fork"]),
    ("The musician played the", "piano", ["pillow", "sandwich", "window"]),
    ("The sun rises in the", "morning", ["midnight", "basement", "ocean"]),
    ("The clock showed that it was time for", "lunch", ["purple", "seven rivers", "the table"]),
    ("He swept the floor with a", "broom", ["lemon", "guitar", "blanket"]),
    ("The car needed fuel, so they stopped at the", "gas station", ["library", "beach",
                                                                    "museum"]),
    ("The children built a snowman in the", "winter", ["summer", "oven", "bathtub"]),
]

ANIMALS = [("dog", "puppy"), ("cat", "kitten"), ("cow", "calf"), ("sheep", "lamb"),
           ("horse", "foal"), ("goat", "kid"), ("duck", "duckling"), ("frog", "tadpole"),
           ("bear", "cub"), ("hen", "chick"), ("pig", "piglet"), ("swan", "cygnet")]
SOUNDS = [("cow", "moo"), ("dog", "bark"), ("cat", "meow"), ("duck", "quack"),
          ("sheep", "baa"), ("lion", "roar"), ("snake", "hiss"), ("owl", "hoot"),
          ("pig", "oink"), ("horse", "neigh")]
COLOURS = [("the clear daytime sky", "blue"), ("fresh grass", "green"), ("a ripe banana", "yellow"),
           ("snow", "white"), ("coal", "black"), ("a ripe tomato", "red"), ("an orange", "orange"),
           ("a lemon", "yellow"), ("a crow", "black"), ("milk", "white"), ("blood", "red"),
           ("a leaf in summer", "green")]
PLURALS = [("mouse", "mice"), ("child", "children"), ("foot", "feet"), ("tooth", "teeth"),
           ("man", "men"), ("woman", "women"), ("goose", "geese"), ("person", "people"),
           ("box", "boxes"), ("cat", "cats"), ("city", "cities"), ("knife", "knives"),
           ("leaf", "leaves"), ("baby", "babies"), ("bus", "buses"), ("dish", "dishes")]
UNITS = [("There are sixty seconds in one", "minute", ["hour", "day", "week"]),
         ("There are sixty minutes in one", "hour", ["second", "year", "month"]),
         ("There are twenty-four hours in one", "day", ["minute", "century", "second"]),
         ("There are seven days in one", "week", ["hour", "minute", "second"]),
         ("There are twelve months in one", "year", ["day", "hour", "minute"]),
         ("A year with 366 days is called a leap", "year", ["frog", "hour", "metre"]),
         ("One kilometre is one thousand", "metres", ["grams", "seconds", "litres"]),
         ("One kilogram is one thousand", "grams", ["metres", "hours", "litres"]),
         ("One metre is one hundred", "centimetres", ["kilograms", "minutes", "days"]),
         ("Water freezes at zero degrees", "Celsius", ["metres", "grams", "hours"]),
         ("A decade is ten", "years", ["minutes", "metres", "grams"]),
         ("A century is one hundred", "years", ["seconds", "grams", "centimetres"]),
         ("Speed is often measured in kilometres per", "hour", ["gram", "litre", "metre"]),
         ("The weight of a bag of flour is measured in", "kilograms", ["hours", "metres",
                                                                      "degrees"]),
         ("The length of a table is measured in", "metres", ["grams", "seconds", "litres"]),
         ("Milk is often sold by the", "litre", ["metre", "hour", "degree"])]


def _item(rng, context, answer, distractors, tag):
    choices = [answer] + [d for d in distractors if d != answer][:3]
    rng.shuffle(choices)
    return {"context": context, "choices": choices, "label": choices.index(answer), "tag": tag}


def choice_items() -> list[dict]:
    rng = random.Random(20240601)
    items = []
    words = sorted({w for pair in OPPOSITES for w in pair})
    for a, b in OPPOSITES:
        for x, y in ((a, b), (b, a)):
            pool = [w for w in words if w not in (x, y)]
            items.append(_item(rng, f"The opposite of {x} is", y, rng.sample(pool, 3),
                               "opposites"))
    for name, seq in SEQUENCES.items():
        for i in range(len(seq) - 4):
            ctx = ", ".join(seq[i:i + 4]) + ","
            answer = seq[i + 4]
            outside = [w for w in seq if w not in seq[i:i + 5]]
            inside = [w for w in seq[i:i + 4] if w != answer]
            dis = (rng.sample(outside, min(3, len(outside))) + rng.sample(inside, 3))[:3]
            items.append(_item(rng, ctx, answer, dis, f"sequence:{name}"))
    for a in range(1, 10):
        for b in range(1, 10, 2):
            s = a + b
            wrong = rng.sample([x for x in range(2, 20) if x != s], 3)
            items.append(_item(rng, f"Question: What is {a} plus {b}?\nAnswer:", str(s),
                               [str(w) for w in wrong], "arithmetic"))
    for ctx, ans, dis in COMMONSENSE:
        items.append(_item(rng, ctx, ans, dis, "commonsense"))
    for ctx, ans, dis in UNITS:
        items.append(_item(rng, ctx, ans, dis, "units"))
    babies = [b for _, b in ANIMALS]
    for adult, baby in ANIMALS:
        items.append(_item(rng, f"A baby {adult} is called a", baby,
                           rng.sample([b for b in babies if b != baby], 3), "animals"))
    sounds = [s for _, s in SOUNDS]
    for animal, sound in SOUNDS:
        items.append(_item(rng, f"The sound a {animal} makes is called a", sound,
                           rng.sample([s for s in sounds if s != sound], 3), "animals"))
    colours = sorted({c for _, c in COLOURS} | {"purple", "pink"})
    for thing, colour in COLOURS:
        items.append(_item(rng, f"The colour of {thing} is", colour,
                           rng.sample([c for c in colours if c != colour], 3), "colours"))
    plurals = [p for _, p in PLURALS]
    for one, many in PLURALS:
        items.append(_item(rng, f"One {one}, two", many,
                           rng.sample([p for p in plurals if p != many], 3), "plurals"))
    return items


SQUAD = [
    ("Harbor Lights", "The lighthouse at Gull Point was finished in 1874 after six years of "
     "work. Its tower is built of grey granite and stands 32 metres tall. The first keeper, "
     "Agnes Moller, tended the lamp for twenty-two years and kept a weather diary that is now "
     "held by the town museum. In 1961 the lamp was automated, and the keeper's cottage became "
     "a school for sailing.",
     [("When was the lighthouse at Gull Point finished?", ["1874"]),
      ("What is the tower built of?", ["grey granite", "granite"]),
      ("How tall is the tower?", ["32 metres"]),
      ("Who was the first keeper?", ["Agnes Moller"]),
      ("What did the keeper's cottage become?", ["a school for sailing"])]),
    ("Bread", "Sourdough bread rises because of a starter, a mixture of flour and water in "
     "which wild yeast and lactic acid bacteria live. The bacteria give the bread its sour "
     "taste. A baker feeds the starter with fresh flour every day. Most loaves are baked at "
     "about 230 degrees Celsius for forty minutes.",
     [("What makes sourdough bread rise?", ["a starter", "starter"]),
      ("What gives the bread its sour taste?", ["The bacteria", "lactic acid bacteria"]),
      ("How often does a baker feed the starter?", ["every day"]),
      ("At what temperature are most loaves baked?", ["about 230 degrees Celsius",
                                                      "230 degrees Celsius"])]),
    ("Rivers", "The River Esk begins in the hills above the village of Carden and flows east "
     "for 85 kilometres before it reaches the sea at Port Alder. Salmon swim up the river each "
     "autumn to lay their eggs in its gravel beds. The old stone bridge at Carden has seven "
     "arches and was repaired in 1990.",
     [("Where does the River Esk begin?", ["in the hills above the village of Carden",
                                           "the hills above the village of Carden"]),
      ("How long is the River Esk?", ["85 kilometres"]),
      ("Where does the river reach the sea?", ["Port Alder"]),
      ("When do salmon swim up the river?", ["each autumn", "autumn"]),
      ("How many arches does the bridge at Carden have?", ["seven"])]),
    ("Bicycles", "Mira repaired her bicycle in the garage on Saturday morning. The front tyre "
     "had a small hole, so she patched it with glue and a rubber square. Then she oiled the "
     "chain and raised the seat by two centimetres. In the afternoon she rode to the lake with "
     "her brother Tomas.",
     [("When did Mira repair her bicycle?", ["on Saturday morning", "Saturday morning"]),
      ("What was wrong with the front tyre?", ["a small hole", "small hole"]),
      ("What did she oil?", ["the chain"]),
      ("Where did she ride in the afternoon?", ["to the lake", "the lake"]),
      ("Who rode with her?", ["her brother Tomas", "Tomas"])]),
]


def squad_doc() -> dict:
    data = []
    for a, (title, context, qas) in enumerate(SQUAD):
        out_qas = []
        for q, (question, answers) in enumerate(qas):
            ans = []
            for text in answers:
                start = context.find(text)
                if start < 0:
                    raise ValueError(f"answer {text!r} not in passage {title!r}")
                ans.append({"text": text, "answer_start": start})
            out_qas.append({"id": f"greenllm-{a}-{q}", "question": question, "answers": ans})
        data.append({"title": title, "paragraphs": [{"context": context, "qas": out_qas}]})
    return {"version": "1.1", "data": data}


def main() -> None:
    with open(HERE / "choice-sample.jsonl", "w", encoding="utf-8") as fh:
        for item in choice_items():
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    (HERE / "squad-sample.json").write_text(json.dumps(squad_doc(), indent=1) + "\n",
                                            encoding="utf-8")


if __name__ == "__main__":
    main()
