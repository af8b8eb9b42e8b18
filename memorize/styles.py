"""Question styles: each adds one instruction to the generation prompt and is its own request."""

STYLES = {
    "mixed": "",
    "simple": "Prefer short, simple factual questions, one fact each.",
    "nuanced": "Prefer tricky, nuanced questions about exceptions, conditions, numbers and how rules interact.",
    "reversed": "In most answers, reverse the order of the statement relative to the text, keeping names and "
                "terms intact.",
}


def check_styles(styles: list[str]) -> list[str]:
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        raise ValueError(f"unknown style(s) {unknown or styles}; choose from {', '.join(STYLES)}")
    return styles
