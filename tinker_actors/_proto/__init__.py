"""Generated protobuf module for the Tinker public schema.

Regenerate after editing ``tinker_actors_public.proto``::

    .venv/bin/python -m tinker_actors._proto.regenerate
"""
