"""The live twin: telemetry in (MQTT JSON, Sparkplug B, OPC UA, replay), one authoritative twin
state updated by a pure reducer, the process core predicting between samples, and a durable
record of everything received."""
