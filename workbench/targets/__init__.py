"""Embedded deployment targets (entries of the exporter registry): LiteRT / TFLite Micro, Arm Ethos-U via Vela, hls4ml. Target profiles (YAML) live here too."""
