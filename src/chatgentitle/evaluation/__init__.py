"""`chatgentitle eval`: metrics (scores, intervals, fields) and report (systems side by side)."""
