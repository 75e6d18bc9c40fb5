"""Loaded at start by the Python of the moto server that `cargo xtask local up` and the tests
start (they put this folder on PYTHONPATH).

moto runs a function itself on every put to a Kinesis stream that has an event-source mapping.
For image functions it cannot (moto 5 fails with AttributeError: 'LambdaFunction' object has no
attribute 'code_digest', and PutRecords returns a 500 although the record was stored). The
toolkit is the poller instead: xtask's event-source emulator reads the stream and runs the real
function. So moto stores the records and delivers none of them itself.
"""

try:
    from moto.awslambda.models import LambdaBackend
except ImportError:  # not moto's Python
    pass
else:

    def _leave_kinesis_to_the_poller(self, *args, **kwargs):
        return None

    LambdaBackend.send_kinesis_message = _leave_kinesis_to_the_poller
