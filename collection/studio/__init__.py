"""The synthetic speech studio: a command grammar spoken by synthetic personas (eSpeak NG via
ctypes) in generated acoustic environments, written as lhotse-compatible manifests.

    from collection.studio import synthesize_plan
    split_dirs = synthesize_plan("demo", "data/synthetic")   # {"train": Path(...), ...}
"""

from collection.studio.environments import ENVIRONMENTS, Environment, Mix, mix_at_snr
from collection.studio.espeak import EspeakEngine, VoiceSettings
from collection.studio.grammar import Grammar, GrammarError, Sentence, command_lexicon, load_grammar
from collection.studio.personas import AGE_BANDS, GENDERS, Persona, sample_persona
from collection.studio.plan import Plan, UtteranceSpec, available_plans, load_plan, plan_utterances
from collection.studio.synth import render_utterance, synthesize_plan

__all__ = [
    "AGE_BANDS",
    "ENVIRONMENTS",
    "GENDERS",
    "Environment",
    "EspeakEngine",
    "Grammar",
    "GrammarError",
    "Mix",
    "Persona",
    "Plan",
    "Sentence",
    "UtteranceSpec",
    "VoiceSettings",
    "available_plans",
    "command_lexicon",
    "load_grammar",
    "load_plan",
    "mix_at_snr",
    "plan_utterances",
    "render_utterance",
    "sample_persona",
    "synthesize_plan",
]
