from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('uploads', '0003_upload_staging_key'),
    ]

    operations = [
        migrations.AddField(
            model_name='event',
            name='txid',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
    ]
