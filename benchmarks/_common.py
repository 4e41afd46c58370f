"""Helpers shared by the benchmark scripts."""


def parse_reps(text: str) -> list[int]:
    """'0-9' → [0, …, 9]; '0,3,5-6' → [0, 3, 5, 6]; '' or 'none' → []."""
    out: list[int] = []
    if text.strip().lower() in ("", "none"):
        return out
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out
