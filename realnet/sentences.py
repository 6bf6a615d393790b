"""Messages as sentences without touching what they name.

Theory of operation
-------------------
kvcore and the planners phrase their messages as lower-case clauses ("cannot reach node h:1",
"the field 'slots' is required"); the HTTP API and the ``storelab`` command answer with
sentences, so something has to capitalise the first letter. A message may also start with what
it names: a node id (``e``, ``r4``), a quoted key, a number. Node ids are case-sensitive (``e``
and ``E`` are two nodes), so such a start must never be changed.

The rule is therefore a closed one: the first letter is made a capital only when the first word
is one of :data:`LOWERCASE_WORDS`, the plain English words our own messages start with (letters
only, followed by a space, punctuation or the end). Anything else (an id, a quote, a digit, a word
already capitalised, a word not on the list) is left as it is. The producers of messages keep
their side of it: a message about a node starts with "node ID", never with the bare id (a node
called ``a`` or ``node`` could not be told from the word otherwise).
"""

from __future__ import annotations

import re

#: the lower-case words a message of ours may start with, which :func:`capitalized` capitalises
LOWERCASE_WORDS = frozenset("""
    a an the this that these those there it its each every all any some no not none nothing
    nobody only one two three four five six seven eight nine ten both either neither
    cannot could can should must may will would is are was were has have had do does did
    if when while after before because since unless until once also too than then
    at in on to from for with without by of as into over under out up
    expected unexpected unknown invalid missing empty bad wrong failed timed timeout refused
    declined interrupted unsupported unreachable unhashable unclosed trailing truncate truncated
    key keys value values node nodes slot slots member members cluster group leader learner
    learners voter voters seed seeds peer peers client clients request requests response message
    messages reply raft storage codec bug read write let index entry entries election data
    witness wait verdict time tick snapshot roll resume record reap operation operations null max
    lease leadership int id heartbeat float bool array assign claim import migrate finish abort
    rollback clear delay give field fields body path address port token config configuration
    epoch epochs owner owners source target weight weights batch move moves moving moved
    migration migrations importing migrating add create remove leave join meet forget state
    states term vote log image session frame link transport host process problem problems model
    completion history
""".split())

#: the first word: lower-case letters only, ending at a space, punctuation or the end
_FIRST_WORD = re.compile(r"([a-z]+)(?=$|[\s.,;:!?)])")


def capitalized(text: str) -> str:
    """``text`` with its first letter made a capital when its first word is one of
    :data:`LOWERCASE_WORDS`; otherwise (a node id, a quote, a digit...) unchanged."""
    m = _FIRST_WORD.match(text)
    if m is None or m.group(1) not in LOWERCASE_WORDS:
        return text
    return text[0].upper() + text[1:]


__all__ = ["LOWERCASE_WORDS", "capitalized"]
