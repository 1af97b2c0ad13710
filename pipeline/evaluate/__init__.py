"""Evaluation: closed-loop episodes, their metrics, confidence intervals, the rq jobs and process pool that run them, the scoreboard and `best`."""
