#!/bin/sh
# Builds chat-room.wasm, a roomhost:object component, from src/chat-room.js
# with componentize-js (StarlingMonkey). `npm ci` first installs the pinned
# tools into node_modules/. The world is wit/world.wit: the repository's
# roomhost:object world (wit/deps/roomhost-object links to it) plus
# wasi:cli/environment for the class's vars. (package.json also pins
# @bytecodealliance/preview2-shim: componentize-js 0.23.0 imports it without
# declaring it, and `npm ci` would leave it out.)
#
# -d http fetch-event: the room makes no outbound HTTP and has no fetch
# event; without them the component would import wasi:http, which the host
# does not link.
set -eu
cd "$(dirname "$0")"
# build.sh [OUT [SOURCE]]: by default src/chat-room.js into chat-room.wasm
# (the tests also build test/layer-probe.js this way).
out=${1:-chat-room.wasm}
src=${2:-src/chat-room.js}
node_modules/.bin/componentize-js \
    --wit wit --world-name object-js \
    -d http fetch-event \
    -o "$out.tmp.$$" "$src"
mv "$out.tmp.$$" "$out"
