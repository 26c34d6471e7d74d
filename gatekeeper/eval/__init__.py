"""The eval harness: how many LLM calls the gate saves, and how many customers it wrongly refuses.

Calls are **counted, not inferred**: every message goes through the real gate wrapping a
:class:`CountingBackend` (``GatedBackend(gate, backend)``), and ``llm_calls`` is the number of
calls that actually reached it; ``llm_calls_saved`` is its complement.

Score-based metrics (AUROC, FPR at 95% TPR, the threshold sweep and calibration) use the
**single-message** rows: a single message's score does not depend on the threshold. A
conversation's outcome does (a short follow-up is rescued only when the turn before it was
forwarded), so conversations are counted in the headline rates and reported on their own, but
kept out of the score curves. A dataset of conversations only falls back to the scores of
every judged user turn (``score_basis`` says which).

Calibration (:func:`choose_threshold`) picks the highest global threshold whose in-domain pass
rate (routed ``llm`` or ``canned``) on the calibration file reaches the target, then the gate is
rebuilt with it (:func:`with_threshold`) and applied unchanged to the evaluated datasets.

Modules (internal; the CLI is the interface): :mod:`.datasets` (labelled data), :mod:`.gates`
(the gate an eval runs), :mod:`.run` and :mod:`.replay` (counted runs), :mod:`.thresholds`
(calibration, sweep), :mod:`.conversations` (the conversation settings' calibration),
:mod:`.metrics` (every number), :mod:`.listing` (the messages a report names, with their chat
context), :mod:`.conversation_settings` (which ones a run used), :mod:`.schema` (``report.json``),
:mod:`.plan` (the whole pipeline), :mod:`.summary`, :mod:`.report` and :mod:`.plots` (rendering),
:mod:`.settings_file` (``calibrate --write``).
"""
