# Life cycle of the Docker Compose stack (docker-compose.yml), as in the seed:
#   make env build up    then  make ps / make logs / make down / make destroy / make clean
# On a machine that allows host networking only, add HOSTNET=1 (postgres on 25432, redis on 26379,
# starter-api on 25000).
# The stack test: make stack-test (root; see stack/README.md).

COMPOSE_FILES := -f docker-compose.yml $(if $(HOSTNET),-f docker-compose.hostnet.yml)
COMPOSE       := docker compose $(COMPOSE_FILES)
IMAGES        := db/postgres_datastore db/postgres starter-api

.PHONY: help env build up down ps logs destroy clean lint diagram standins stack-test

help:
	@sed -n 's/^\([a-z-]*\):.*## \(.*\)/  make \1\t\2/p' $(MAKEFILE_LIST) | expand -t 24

env: .env ## make .env from .env.example, with a random SECRET_KEY

.env:
	sed "s/^SECRET_KEY=.*/SECRET_KEY=$$(python3 -c 'import secrets; print(secrets.token_hex(32))')/" \
		.env.example > .env
	chmod 600 .env
	@echo "wrote .env: change POSTGRES_PASSWORD before the first 'make up'"

build: ## build the images db/postgres_datastore, db/postgres, starter-api (redis runs redis:8 as is)
	$(COMPOSE) build

up: ## start the stack in the background (docker compose up -d)
	@# ./logs is bind-mounted at /app/logs, where starter-api runs as uid 10001.
	mkdir -p logs && chmod a+rwx logs
	$(COMPOSE) up -d

down: ## stop and remove the containers; the database volume is kept
	$(COMPOSE) down

ps: ## show the containers and their health
	$(COMPOSE) ps -a

logs: ## follow the containers' logs
	$(COMPOSE) logs -f --tail 50

destroy: ## remove the containers AND the database volume (all data is lost)
	$(COMPOSE) down -v --remove-orphans

clean: destroy ## destroy, then remove the project's images
	-docker rmi $(IMAGES)

lint: ## hadolint every Dockerfile (hadolint from the stack test's tool venv, or on PATH)
	@hl=$$(command -v hadolint || echo /var/cache/starter-stack/venv/bin/hadolint); \
	find . -name Dockerfile -not -path '*/.venv/*' -not -path './.git/*' | sort | \
		xargs -t -n 1 $$hl --config .hadolint.yaml

diagram: ## redraw images/Starter_Microservices_Deployment.png from its .dot source (Debian's graphviz)
	dot -Tpng -Gdpi=110 -o images/Starter_Microservices_Deployment.png images/Starter_Microservices_Deployment.dot

standins: ## build local stand-ins for python:3.13-slim, postgres:17, redis:8, busybox (no Docker Hub)
	bash stack/build-standins.sh

stack-test: ## build, run and check the whole stack (root; host networking only)
	bash stack/test-stack.sh
