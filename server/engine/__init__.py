"""The engine layer: workflow definitions, runs, and the scheduling of their jobs
(claim, report, reap, and dispatch of hand-offs to waiting workers)."""
