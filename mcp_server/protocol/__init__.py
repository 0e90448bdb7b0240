"""The chat-completions protocol: request parsing (:mod:`.request`), message content (:mod:`.content`) and chunk shaping (:mod:`.chunks`), shared by every surface and engine."""
