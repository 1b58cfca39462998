import unittest

from app import greeting


class GreetingTest(unittest.TestCase):
    def test_greets_and_shouts(self):
        self.assertEqual(greeting("Ada"), "Hello, Ada!")
        self.assertEqual(greeting("Ada", shout=True), "HELLO, ADA!")


if __name__ == "__main__":
    unittest.main()
