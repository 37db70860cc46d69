# One command sets everything up and runs the main job; one sets everything up and runs the tests.
#   make speedrun      # the whole Llama 3 recipe in miniature, ends with a report card
#   make test          # the test suite (fast tests; `make test-slow` for the rest)
VENV ?= .venv
ARGS ?=

.PHONY: setup test test-slow speedrun
setup:
	@bash scripts/setup.sh

test: setup
	$(VENV)/bin/python -m pytest $(ARGS)

test-slow: setup
	$(VENV)/bin/python -m pytest -m slow $(ARGS)

speedrun: setup
	$(VENV)/bin/herd speedrun $(ARGS)
