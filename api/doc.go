// Package api holds RingKV's protobuf service definitions (ringkv/v1) and the
// code generated from them, committed so that building never needs protoc.
// Regenerate with `make proto`.
package api
