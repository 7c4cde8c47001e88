# make demo: small complete experiment on the embedded digits data + learning-curve PNG.
# make test: the pytest suite. Both create the virtual environment they need.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

demo: $(VENV)/.installed
	$(PYTHON) run.py
	$(PYTHON) run_plot.py

test: $(VENV)/.installed
	$(PYTHON) -m pytest -q tests

bench: $(VENV)/.installed
	$(PYTHON) benchmarks/label_efficiency.py

clean:
	rm -rf $(VENV) local_data/digits
