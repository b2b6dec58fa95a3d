"""PV-SQL's Probe ("PV-SQL: Synergizing Database Probing and Rule-based Verification for Text-to-SQL Agents", arXiv
2604.17653): the LLM explores the database with small SELECTs before the SQL is written.

- `prober.py`: the stage, `PVProber` (`conf/prober/pv.yaml`), and the checks of a probe before it runs.
- `prompts.py` beside `pv_probe_v1.yaml`: the probe template and the parser of its reply.

PV-SQL's other half, Verify & Repair, is the verifier `plugins/verifier/pv/`; the two share no code.
"""

# the names the single-file plugin (`plugins/prober/pv.py`) had, for code that imports them from here
from t2s_plugins.prober.pv.prober import PVProber, check_probe, describe
from t2s_plugins.prober.pv.prompts import ProbeReply, parse_reply

__all__ = ["PVProber", "ProbeReply", "check_probe", "describe", "parse_reply"]
