"""The web console served by `workhorse serve` at /ui."""
