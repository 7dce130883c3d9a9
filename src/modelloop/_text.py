"""One way to turn an exception into a one-line reason that keeps its root cause.

Errors from libraries we call (skl2onnx, onnx, scikit-learn) often say what went wrong only at
the end of a long message, or only in the exception that caused the one we caught. A reason cut
to its first few hundred characters loses exactly that part, so this keeps the innermost cause
and, when the text must be shortened, both ends of it.
"""

from __future__ import annotations

__all__ = ["brief"]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _root(e: BaseException) -> BaseException:
    seen = {id(e)}
    while True:
        nxt = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        if nxt is None or id(nxt) in seen:
            return e
        seen.add(id(nxt))
        e = nxt


def brief(e: BaseException, limit: int = 1000, *, with_type: bool = True) -> str:
    """``Type: message`` on one line, followed by the root cause when another exception caused
    ``e``; longer than ``limit`` characters, the middle is elided so the end stays readable."""
    text = _one_line(e) if with_type else (" ".join(str(e).split()) or type(e).__name__)
    root = _root(e)
    if root is not e:
        cause = _one_line(root)
        if cause not in text:
            text = f"{text} (caused by {cause})"
    if len(text) <= limit:
        return text
    keep = max(limit - 5, 2)
    head = keep // 3
    return f"{text[:head]} ... {text[len(text) - (keep - head) :]}"
