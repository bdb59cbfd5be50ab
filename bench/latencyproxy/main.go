// Command latencyproxy is a reverse proxy that waits a fixed delay before forwarding each
// request: a far-away bucket, on loopback. The gate reaches fake-gcs-server through it
// (STORAGE_EMULATOR_HOST names the proxy), so every storage call waits as long as a call to a
// bucket in another region would, with nothing changed in the gate.
//
// It is Go, not Python, because its own cost must stay out of the figures: the bench shares two
// cores between go, the helper, the gate, the emulator and this proxy, and a Python proxy spent
// about a millisecond of CPU per call (more than the gate's own hit path).
//
//	latencyproxy -listen 127.0.0.1:PORT -upstream http://127.0.0.1:EMULATOR -delay 30ms
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := flag.String("upstream", "", "base URL every request is forwarded to")
	delay := flag.Duration("delay", 30*time.Millisecond, "wait before forwarding each request")
	flag.Parse()
	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		log.Fatalf("latencyproxy: -upstream %q is not a base URL", *upstream)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// The Host header goes on unchanged, so URLs the emulator hands out (resumable
			// upload sessions) lead back through the proxy.
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 512,
			DisableCompression:  true,
		},
		FlushInterval: -1, // pass bytes on as they come: a streamed body must not wait for a buffer
	}
	server := &http.Server{
		Addr: *listen,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(*delay)
			proxy.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: time.Minute,
	}
	log.Fatal(server.ListenAndServe())
}
