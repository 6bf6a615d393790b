"""Moved: the frame codec is now :mod:`kvwire`, which both worlds import; this re-export keeps
old ``realnet.wire`` imports working."""

from kvwire.frames import DEFAULT_MAX_FRAME, HEADER, FrameDecoder, FrameError, frame, pack, unpack

__all__ = ["DEFAULT_MAX_FRAME", "HEADER", "FrameDecoder", "FrameError", "frame", "pack", "unpack"]
