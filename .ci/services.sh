#!/usr/bin/env bash
# Start any of the machine's services that is down (there is no systemd here).
set -uo pipefail

up() { timeout 2 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {  # port, name
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 1; done
  echo "service $2 did not come up on port $1" >&2
  return 1
}

if ! up 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  wait_for 5432 postgresql
fi
if ! up 3306; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  wait_for 3306 mariadb
fi
if ! up 6379; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_for 6379 redis
fi
if ! up 5672; then
  rabbitmq-server -detached || true
  wait_for 5672 rabbitmq
fi
echo "services: postgresql, mariadb, redis and rabbitmq are up"
