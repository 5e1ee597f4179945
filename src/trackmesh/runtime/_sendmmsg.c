/* trackmesh.runtime._sendmmsg: a worker's outbox leaves in one sendmmsg(2) per batch.
 *
 * The worker sends one datagram per forwarded copy; through socket.sendto each costs a syscall and
 * CPython's argument parsing and address resolution (docs/benchmarks.md, "sendmmsg against sendto").
 * sendmmsg() hands the kernel up to BATCH datagrams, each with its own destination, in one call.
 *
 * Built by setup.py beside the mypyc modules when a C compiler is there (Linux only); without it the
 * worker sends with socket.sendto per datagram (runtime/udp_send.py), which behaves the same.
 *
 * sendmmsg(fd, datagrams, start=0) -> int
 *   datagrams: a sequence (list, deque) of (payload, (host, port)) or (payload, (host, port, flowinfo,
 *   scope_id)) with a bytes-like payload and a numeric IPv4 or IPv6 host. Sends datagrams[start:start +
 *   BATCH] with one sendmmsg call on the non-blocking UDP socket fd and returns how many the kernel took.
 *   It stops before the first datagram it cannot encode (not bytes-like, not a numeric address, port
 *   out of range) and the kernel stops at the first it refuses (EAGAIN, ENOBUFS, EMSGSIZE, ...): the
 *   caller sends that one and the rest with socket.sendto, which reports (and resolves) each as before,
 *   so nothing is reordered. Send errors are never raised here: a short count is the whole answer.
 *
 * The GIL is held across the syscall: a worker has one loop thread, and letting another thread take
 * the GIL for a few microseconds of kernel work costs the loop a wait of up to the switch interval
 * (bench/sendmmsg_syscall.py measures both; define TRACKMESH_SENDMMSG_RELEASE_GIL to release it).
 */

#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sendmmsg, struct mmsghdr */
#endif
#include <Python.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define BATCH 64

typedef union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} address_t;

/* The destination of one datagram: 0 and *len set, or -1 (not a numeric address we can encode; no
 * Python error is left set). */
static int
encode_address(PyObject *addr, address_t *out, socklen_t *len)
{
    if (!PyTuple_Check(addr)) {
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(addr);
    if (n != 2 && n != 4) {
        return -1;
    }
    PyObject *host_obj = PyTuple_GET_ITEM(addr, 0);
    PyObject *port_obj = PyTuple_GET_ITEM(addr, 1);
    if (!PyUnicode_Check(host_obj) || !PyLong_Check(port_obj)) {
        return -1;
    }
    Py_ssize_t host_len = 0;
    const char *host = PyUnicode_AsUTF8AndSize(host_obj, &host_len);
    if (host == NULL) {
        PyErr_Clear();
        return -1;
    }
    if ((size_t)host_len != strlen(host)) {
        return -1; /* an embedded NUL: socket.sendto refuses it */
    }
    long port = PyLong_AsLong(port_obj);
    if (port < 0 || port > 65535) {
        PyErr_Clear();
        return -1;
    }
    memset(out, 0, sizeof(*out));
    if (strchr(host, ':') == NULL) {
        if (n != 2 || inet_pton(AF_INET, host, &out->v4.sin_addr) != 1) {
            return -1;
        }
        out->v4.sin_family = AF_INET;
        out->v4.sin_port = htons((uint16_t)port);
        *len = sizeof(out->v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &out->v6.sin6_addr) != 1) {
        return -1; /* also "fe80::1%eth0": socket.sendto resolves scoped names */
    }
    out->v6.sin6_family = AF_INET6;
    out->v6.sin6_port = htons((uint16_t)port);
    if (n == 4) {
        unsigned long flowinfo = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 2));
        unsigned long scope_id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 3));
        if (PyErr_Occurred() || flowinfo > 0xfffffUL || scope_id > 0xffffffffUL) {
            PyErr_Clear();
            return -1;
        }
        out->v6.sin6_flowinfo = htonl((uint32_t)flowinfo);
        out->v6.sin6_scope_id = (uint32_t)scope_id;
    }
    *len = sizeof(out->v6);
    return 0;
}

static PyObject *
trackmesh_sendmmsg(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "sendmmsg(fd, datagrams, start=0)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "sendmmsg: fd out of range");
        return NULL;
    }
    PyObject *datagrams = args[1];
    Py_ssize_t start = 0;
    if (nargs == 3) {
        start = PyLong_AsSsize_t(args[2]);
        if (start == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (start < 0) {
            PyErr_SetString(PyExc_ValueError, "sendmmsg: start must not be negative");
            return NULL;
        }
    }
    Py_ssize_t total = PySequence_Size(datagrams);
    if (total < 0) {
        return NULL;
    }
    Py_ssize_t want = total - start;
    if (want <= 0) {
        return PyLong_FromLong(0);
    }
    if (want > BATCH) {
        want = BATCH;
    }

    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    address_t addrs[BATCH];
    PyObject *items[BATCH];   /* held until after the syscall: they own the payloads */
    Py_buffer views[BATCH];   /* payloads that are not bytes (bytearray, memoryview) */
    char viewed[BATCH];
    unsigned int ready = 0;

    for (Py_ssize_t i = 0; i < want; i++) {
        PyObject *item = PySequence_GetItem(datagrams, start + i);
        if (item == NULL) {
            PyErr_Clear(); /* the sequence shrank: send what is encoded */
            break;
        }
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            Py_DECREF(item);
            break;
        }
        PyObject *payload = PyTuple_GET_ITEM(item, 0);
        socklen_t addr_len = 0;
        if (encode_address(PyTuple_GET_ITEM(item, 1), &addrs[ready], &addr_len) != 0) {
            Py_DECREF(item);
            break;
        }
        viewed[ready] = 0;
        if (PyBytes_CheckExact(payload)) {
            iov[ready].iov_base = PyBytes_AS_STRING(payload);
            iov[ready].iov_len = (size_t)PyBytes_GET_SIZE(payload);
        }
        else if (PyObject_GetBuffer(payload, &views[ready], PyBUF_SIMPLE) == 0) {
            viewed[ready] = 1;
            iov[ready].iov_base = views[ready].buf;
            iov[ready].iov_len = (size_t)views[ready].len;
        }
        else {
            PyErr_Clear();
            Py_DECREF(item);
            break;
        }
        items[ready] = item;
        memset(&msgs[ready].msg_hdr, 0, sizeof(msgs[ready].msg_hdr));
        msgs[ready].msg_hdr.msg_name = &addrs[ready].sa;
        msgs[ready].msg_hdr.msg_namelen = addr_len;
        msgs[ready].msg_hdr.msg_iov = &iov[ready];
        msgs[ready].msg_hdr.msg_iovlen = 1;
        msgs[ready].msg_len = 0;
        ready++;
    }

    int sent = 0;
    if (ready > 0) {
#ifdef TRACKMESH_SENDMMSG_RELEASE_GIL
        Py_BEGIN_ALLOW_THREADS
        sent = sendmmsg((int)fd, msgs, ready, MSG_DONTWAIT);
        Py_END_ALLOW_THREADS
#else
        sent = sendmmsg((int)fd, msgs, ready, MSG_DONTWAIT);
#endif
        if (sent < 0) {
            /* Refused the first one (EAGAIN, ENOBUFS, EBADF, ...): socket.sendto of that datagram
             * reports it. */
            sent = 0;
        }
    }
    for (unsigned int i = 0; i < ready; i++) {
        if (viewed[i]) {
            PyBuffer_Release(&views[i]);
        }
        Py_DECREF(items[i]);
    }
    return PyLong_FromLong(sent);
}

static PyMethodDef methods[] = {
    {"sendmmsg", (PyCFunction)(void (*)(void))trackmesh_sendmmsg, METH_FASTCALL,
     "sendmmsg(fd, datagrams, start=0) -> int\n\n"
     "Send datagrams[start:start + BATCH], each a (payload, address) pair, with one sendmmsg(2)\n"
     "on the non-blocking UDP socket fd; return how many the kernel took. Stops before the first\n"
     "datagram it cannot encode or the kernel refuses; never raises a send error."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_sendmmsg",
    "A worker's outbox in one sendmmsg(2) per batch (see runtime/udp_send.py).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__sendmmsg(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BATCH", BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
