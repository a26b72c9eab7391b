#!/bin/sh
# Stand-in for the geofs binary, for testing the benchmark harness before
# geofs exists: it implements the same CLI contract with a plain go-fuse
# loopback (the loopref helper) over STORE/data.
#
#   geofs-standin.sh init STORE             create the store, print a site id
#   geofs-standin.sh mount STORE MOUNTPOINT mount (daemonized), return when ready
#
# Unmount with `umount MOUNTPOINT`; the daemon then exits.
set -eu

bench_dir=$(cd "$(dirname "$0")/.." && pwd)

case "${1:-}" in
init)
	store=$2
	if [ -e "$store" ] && [ -n "$(ls -A "$store")" ]; then
		echo "geofs-standin: $store exists and is not empty" >&2
		exit 1
	fi
	mkdir -p "$store/data"
	(cd "$bench_dir" && go build -o "$store/loopref" ./loopref)
	echo "standin-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
	;;
mount)
	store=$(realpath "$2")
	mnt=$3
	setsid "$store/loopref" "$store/data" "$mnt" >>"$store/daemon.log" 2>&1 </dev/null &
	i=0
	until mountpoint -q "$mnt"; do
		i=$((i + 1))
		if [ $i -gt 300 ]; then
			echo "geofs-standin: $mnt not mounted after 30s" >&2
			exit 1
		fi
		sleep 0.1
	done
	;;
*)
	echo "usage: $0 init STORE | mount STORE MOUNTPOINT" >&2
	exit 2
	;;
esac
