"""The micro world: a synthetic text-to-image domain with known ground truth, small enough for a laptop CPU.

Scenes (`scenes`) are rendered procedurally (`render`) and judged by an oracle whose accuracy is measured
(`judge`), so alignment methods can be compared on numbers that mean exactly what they say.
"""
