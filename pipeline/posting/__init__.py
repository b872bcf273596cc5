"""Direct posting: released posts go to Mastodon and Bluesky by themselves, exactly once.

``run.post_due`` is the one path (the scheduler's social job and ``pipeline social
post``); ``mastodon`` and ``bluesky`` are thin clients over Mastodon.py and the atproto
SDK that say what happened in our words (``outcomes``).
"""
