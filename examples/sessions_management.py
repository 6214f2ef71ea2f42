"""Sessions through the RestClient: list_sessions, then get_session for the newest, with its
training runs and samplers.

Env: TINKER_SESSION_LIMIT (10).
"""

from __future__ import annotations

import _common as c

import tinker_actors as tinker


def main() -> None:
    with tinker.ServiceClient() as service:
        # Make sure this session has something in it to show.
        training = service.create_lora_training_client(base_model=c.base_model(), rank=8).result()
        training.save_weights_and_get_sampling_client().result()
        rest = tinker.RestClient()

        listed = rest.list_sessions(limit=c.env_int("TINKER_SESSION_LIMIT", 10)).result()
        print(f"Found {len(listed.sessions)} sessions:")
        for sid in listed.sessions:
            print(f"  • {sid}")

        own = service.holder.session_id
        info = rest.get_session(own).result()
        print(f"Session {own}:")
        print(f"  Training Runs: {len(info.training_run_ids)}")
        print(f"  Samplers: {len(info.sampler_ids)}")


if __name__ == "__main__":
    main()
