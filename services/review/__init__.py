"""The review queue: what a person must look at, raised by both rails and by finance's reconciliation, worked by
finance. It sits below the rails (they raise into it) and above the ledger; it imports no rail and no finance code.
"""
