#!/usr/bin/env bash
# Starts the local services the tests and the demo use, each only when it is
# not already answering on loopback, and enables what a fresh machine has
# off (RabbitMQ's management API, which OpenBao's rabbitmq engine talks to).
# Idempotent: on a machine where everything answers, it only checks.
#
#   scripts/ensure-services.sh            # all: PostgreSQL, Redis, RabbitMQ + management
#   scripts/ensure-services.sh postgres   # only the ones named
#
# The commands are those the machine image uses to start each service; a
# service that is not installed at all is reported with what to install.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port what
    for _ in $(seq 1 120); do answers "$1" && return 0; sleep 0.5; done
    echo "ensure-services: $2 did not start on 127.0.0.1:$1" >&2
    exit 1
}
need() { # command package
    command -v "$1" >/dev/null 2>&1 || {
        echo "ensure-services: '$1' is not installed (apt-get install $2)" >&2
        exit 1
    }
}

postgres() {
    answers 5432 && return 0
    need pg_ctlcluster postgresql
    echo "ensure-services: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    wait_port 5432 PostgreSQL
}

redis() {
    answers 6379 && return 0
    need redis-server redis-server
    echo "ensure-services: starting Redis" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port 6379 Redis
}

rabbitmq() {
    if ! answers 5672; then
        need rabbitmq-server rabbitmq-server
        echo "ensure-services: starting RabbitMQ" >&2
        rabbitmq-server -detached
        wait_port 5672 RabbitMQ
    fi
    # OpenBao's rabbitmq engine creates users through the management API,
    # which a fresh machine has switched off.
    if ! answers 15672; then
        echo "ensure-services: enabling RabbitMQ's management API" >&2
        rabbitmq-plugins enable rabbitmq_management >/dev/null
        wait_port 15672 "the RabbitMQ management API"
    fi
}

if [[ $# -eq 0 ]]; then set -- postgres redis rabbitmq; fi
for s in "$@"; do
    case "$s" in
    postgres | redis | rabbitmq) "$s" ;;
    *) echo "ensure-services: unknown service '$s' (postgres, redis, rabbitmq)" >&2; exit 2 ;;
    esac
done
