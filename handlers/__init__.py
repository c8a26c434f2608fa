"""The project's task handlers. Importing this package registers them all:
``listener run --handlers handlers``. Each module is also a model for your own."""

from handlers import care_plan, email, razorpay_webhook

__all__ = ["care_plan", "email", "razorpay_webhook"]
