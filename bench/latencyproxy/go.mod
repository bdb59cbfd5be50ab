module gocachegate.local/bench/latencyproxy

go 1.24
