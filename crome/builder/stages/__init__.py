"""Pipeline stages, one module each, behind one interface (`base.Stage`); every drop is a recorded rejection.

rubrics -> rate -> causal -> verify -> validate run per pair, concurrently across pairs; neutral,
cross_prompt and dedup run after them in source order. `crome.builder.run.pipeline.STAGES` is the list.
"""
