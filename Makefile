# make demo: small complete experiment on the embedded digits data + learning-curve PNG.
# make test: the pytest suite. Both create the virtual environment they need.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Label Studio's server, for the sync test (label.py never imports it): its own venv, see requirements-label-studio.txt
LS_VENV ?= .venv-label-studio

.PHONY: demo demo-federated demo-async demo-label test bench clean

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

$(LS_VENV)/.installed: requirements-label-studio.txt
	python3 -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --upgrade pip
	$(LS_VENV)/bin/pip install --quiet -r requirements-label-studio.txt
	touch $@

demo: $(VENV)/.installed
	$(PYTHON) run.py
	$(PYTHON) run_plot.py

# Federated AL on digits: 3 clients (Dirichlet 0.5), 4 cycles x 5 rounds x 10 local epochs, Flower simulation.
demo-federated: $(VENV)/.installed
	$(PYTHON) run.py --out local_data/federated-demo --clients 3 --alpha 0.5 --rounds 5 --local-epochs 10 \
		--methods random,entropy,ksas,logo,fk-nn --runs 1 --threads 1
	$(PYTHON) run_plot.py --out local_data/federated-demo

# Asynchronous label querying on digits: 3 workers, 2 servers on Ray, simulated 0-60 s annotators, async then sync.
ASYNC_DEMO := --out local_data/async-demo --async-workers 3 --servers 2 --query-batch 10 --trainings 4 \
	--methods entropy --runs 1 --threads 1
demo-async: $(VENV)/.installed
	$(PYTHON) run.py $(ASYNC_DEMO)
	$(PYTHON) run.py $(ASYNC_DEMO) --sync
	$(PYTHON) run_plot.py --out local_data/async-demo

# Your own images: 500 digit PNGs, a project, a cold-start batch, the annotator's answers for it, a second batch.
LABEL_DEMO := local_data/label-demo
demo-label: $(VENV)/.installed
	rm -rf $(LABEL_DEMO) && $(PYTHON) -m labelling.demo_images $(LABEL_DEMO)
	$(PYTHON) label.py init $(LABEL_DEMO)/project --images $(LABEL_DEMO)/images \
		--classes zero,one,two,three,four,five,six,seven,eight,nine --model lenet --image-size 28
	$(PYTHON) label.py next $(LABEL_DEMO)/project --budget 50
	$(PYTHON) -m labelling.demo_images $(LABEL_DEMO) --answer $(LABEL_DEMO)/project/batches/001/batch.csv
	$(PYTHON) label.py import $(LABEL_DEMO)/project $(LABEL_DEMO)/answers-001.csv
	$(PYTHON) label.py next $(LABEL_DEMO)/project --budget 50
	$(PYTHON) label.py status $(LABEL_DEMO)/project

test: $(VENV)/.installed $(LS_VENV)/.installed
	FKAL_LABEL_STUDIO=$(LS_VENV)/bin/label-studio $(PYTHON) -m pytest -q tests

bench: $(VENV)/.installed
	$(PYTHON) benchmarks/label_efficiency.py

clean:
	rm -rf $(VENV) $(LS_VENV) local_data/digits local_data/federated-demo local_data/async-demo local_data/label-demo
