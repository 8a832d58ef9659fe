# fill.py HOST:PORT MB: 120 KiB values into /probe/fill<i%200>/put, 4 keep-alive threads
import http.client, sys, threading, os
host, port = sys.argv[1].split(':'); n = int(sys.argv[2]) * 1024 // 120
val = os.urandom(60 * 1024).hex().encode()
def work(t):
    c = http.client.HTTPConnection(host, int(port))
    for i in range(t, n, 4):
        c.request("POST", f"/probe/fill{i % 200}/put?key=k{i:07}", body=val)
        r = c.getresponse(); r.read(); assert r.status == 200
ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
