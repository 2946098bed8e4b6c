# Life cycle of the Docker Compose stack (docker-compose.yml), as in the seed:
#   make env build up    then  make ps / make logs / make down / make destroy / make clean
# On a machine that allows host networking only, add HOSTNET=1 (postgres on 25432, redis on 26379,
# the proxy on 25000, every replica of starter-api on 25001).
# The stack test: make stack-test (root; see stack/README.md).

COMPOSE_FILES := -f docker-compose.yml $(if $(HOSTNET),-f docker-compose.hostnet.yml)
COMPOSE       := docker compose $(COMPOSE_FILES)
IMAGES        := db/postgres_datastore db/postgres starter-api
REPLICAS      ?= 2

.PHONY: help env build up down ps logs destroy clean lint diagram standins stack-test replica-test k8s-test

help:
	@sed -n 's/^\([a-z-]*\):.*## \(.*\)/  make \1\t\2/p' $(MAKEFILE_LIST) | expand -t 24

env: .env secrets/postgres_password secrets/secret_key ## make .env from .env.example and secrets/ with a random password and key

.env:
	cp .env.example .env
	chmod 600 .env
	@echo "wrote .env"

# The folder is the owner's alone; the files are world-readable so that the containers' users (uid
# 10001, 999) can read them where Compose mounts them.
secrets/postgres_password secrets/secret_key:
	install -d -m 0700 secrets
	umask 022 && python3 -I -c 'import secrets, sys; sys.stdout.write(secrets.token_urlsafe(32))' > $@
	@echo "wrote $@"

build: ## build the images db/postgres_datastore, db/postgres, starter-api (redis:8 and nginx:1.28 run as they are)
	$(COMPOSE) build

up: ## start the stack in the background: proxy, migrate once, REPLICAS (2) replicas of starter-api
	$(COMPOSE) up -d --scale starter-api=$(REPLICAS)

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

standins: ## build local stand-ins for python:3.13-slim, postgres:17, redis:8, nginx:1.28, busybox (no Docker Hub)
	bash stack/build-standins.sh

stack-test: ## build, run and check the whole stack (root; host networking only)
	bash stack/test-stack.sh

replica-test: ## three replicas behind proxy/nginx.conf without Docker: failover, shared limits, throughput (root)
	bash stack/test-replicas.sh

k8s-test: ## render every Kubernetes overlay and validate it (no cluster)
	bash stack/test-kubernetes.sh
